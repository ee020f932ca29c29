"""Executors: run a sweep's configs sequentially, on a local process pool, or on Ray.

All executors share one interface: :meth:`Executor.imap` takes the configs to run and yields
``(index, Outcome)`` pairs as runs finish (in completion order). Work is done by
:func:`execute_config`, which never raises: a failing run comes back as an outcome carrying its
traceback, so one bad grid point cannot stop the others. Only the caller writes to disk, so a
remote Ray cluster needs no shared file system (it does need fedsim installed on its nodes).
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Protocol

import pandas as pd

from fedsim.config import RunConfig
from fedsim.results import TABLES

#: Environment variable that sets torch's thread count inside workers.
THREADS_ENV = "FEDSIM_THREADS"


@dataclass
class Outcome:
    """Result of one run: its tables, engine info and extra files (name -> bytes, e.g. PNGs), or
    the error (everything else empty)."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    error: str | None = None
    files: dict[str, bytes] = field(default_factory=dict)


def execute_config(cfg_json: dict, threads: int = 1) -> Outcome:
    """Validate and simulate one run in this process; errors are returned, not raised.

    Parameters
    ----------
    cfg_json : dict
        ``RunConfig.model_dump(mode="json")`` (plain data, cheap to ship to a worker).
    threads : int
        PyTorch CPU threads for this run.
    """
    import torch

    from fedsim.engine import run

    try:
        torch.set_num_threads(threads)
        result = run(RunConfig.model_validate(cfg_json))
        return Outcome({t: getattr(result, t) for t in TABLES}, result.info,
                       files=dict(getattr(result, "files", {})))
    except Exception as exc:  # noqa: BLE001 -- any failure of one run is recorded, not fatal
        text = "".join(traceback.format_exception(exc))
        return Outcome(error=f"{text}\n{type(exc).__name__}: {exc}")


class Executor(Protocol):
    """Runs configs and yields ``(index into configs, Outcome)`` as each finishes."""

    def imap(self, configs: Sequence[RunConfig]) -> Iterator[tuple[int, Outcome]]: ...


@dataclass
class LocalExecutor:
    """Runs in this process (``workers == 1``) or on a pool of ``workers`` spawned processes."""

    workers: int = 1
    threads: int = 1

    def imap(self, configs: Sequence[RunConfig]) -> Iterator[tuple[int, Outcome]]:
        jobs = [c.model_dump(mode="json") for c in configs]
        if self.workers == 1:
            for i, job in enumerate(jobs):
                yield i, execute_config(job, self.threads)
            return
        with ProcessPoolExecutor(self.workers, mp_context=get_context("spawn")) as pool:
            pending = {pool.submit(execute_config, job, self.threads): i for i, job in enumerate(jobs)}
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        yield pending.pop(fut), fut.result()
            finally:
                for fut in pending:
                    fut.cancel()


@dataclass
class RayExecutor:
    """Runs on Ray: an existing cluster at ``address``, or a local instance of ``workers`` CPUs.

    Each run is one task of one CPU. A local instance is shut down when the sweep ends.
    """

    address: str | None = None
    workers: int = 2
    threads: int = 1

    def imap(self, configs: Sequence[RunConfig]) -> Iterator[tuple[int, Outcome]]:
        import ray

        started = not ray.is_initialized()
        if started:
            env = {"env_vars": {THREADS_ENV: str(self.threads)}}
            if self.address:
                ray.init(address=self.address, runtime_env=env, log_to_driver=False)
            else:
                ray.init(num_cpus=self.workers, include_dashboard=False, runtime_env=env,
                         log_to_driver=False)
        try:
            task = ray.remote(num_cpus=1, max_retries=0)(execute_config)
            pending = {task.remote(c.model_dump(mode="json"), self.threads): i
                       for i, c in enumerate(configs)}
            try:
                while pending:
                    done, _ = ray.wait(list(pending), num_returns=1)
                    for ref in done:
                        yield pending.pop(ref), ray.get(ref)
            finally:
                for ref in pending:
                    ray.cancel(ref, force=True)
        finally:
            if started:
                ray.shutdown()


def make_executor(kind: str, workers: int, address: str | None, threads: int) -> Executor:
    """The executor named ``kind`` (``local`` or ``ray``)."""
    if kind == "local":
        return LocalExecutor(workers, threads)
    if kind == "ray":
        return RayExecutor(address, workers, threads)
    raise ValueError(f"unknown executor {kind!r} (use local or ray)")

