"""Drive a sweep: skip finished runs, execute the rest, record each as it ends, combine."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from fedsim.sweep.executors import Executor
from fedsim.sweep.expand import Sweep
from fedsim.sweep.store import is_done, write_combined, write_failure, write_run


@dataclass(frozen=True)
class SweepReport:
    """What one invocation did.

    Attributes
    ----------
    total, skipped, executed, failed : int
        Runs in the sweep; already done before this invocation (resumed); run now; failed now.
    host_seconds : float
        Wall-clock seconds this invocation spent executing runs.
    """

    total: int
    skipped: int
    executed: int
    failed: int
    host_seconds: float


def run_sweep(sweep: Sweep, out: str | Path, executor: Executor, *,
              progress: bool = True) -> SweepReport:
    """Run every run of ``sweep`` that ``out`` does not already hold, then combine the tables.

    Each run is written as soon as it finishes, so an interrupted sweep loses at most the runs
    in flight; calling this again resumes it. A failed run is recorded (``error.txt``) and does
    not stop the others; it is retried by the next invocation.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = [r for r in sweep.runs if not is_done(out, r.run_id)]
    skipped = len(sweep.runs) - len(todo)
    failed = 0
    t0 = time.perf_counter()
    bar = tqdm(total=len(sweep.runs), initial=skipped, disable=not progress, unit="run",
               desc=sweep.name, dynamic_ncols=True)
    try:
        for i, outcome in executor.imap([r.config for r in todo]):
            run = todo[i]
            if outcome.error is None:
                write_run(out, run, outcome.tables, outcome.info, outcome.files)
            else:
                failed += 1
                write_failure(out, run, outcome.error)
                bar.write(f"run {run.run_id} ({run.config.scheme}, {run.swept}) failed: "
                          f"{outcome.error.strip().splitlines()[-1]}")
            bar.update(1)
            bar.set_postfix(failed=failed)
    finally:
        bar.close()
        write_combined(out, sweep)
    return SweepReport(len(sweep.runs), skipped, len(todo), failed, time.perf_counter() - t0)
