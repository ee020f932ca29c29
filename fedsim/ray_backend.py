"""One simulation's local training on Ray actors (``compute.backend: ray``).

Layer 1 (PyTorch and Ray, no simpy). Each actor holds the training set once, read zero-copy from
Ray's object store (one ``ray.put`` per run), and its own copy of the model, and trains with the
local backend's trainer (batched or sequential, ``compute.trainer``). The engine's
:class:`RayTrainer` implements the :class:`~fedsim.trainers.Trainer` protocol: the first client of
a round that asks for its result hands over the plaintext global model it decoded; the trainer
then sends the whole cohort to the actors at once, one asynchronous call per unit of work (a
batched chunk or one client; each actor runs its share in order, all actors in parallel), and
waits only for the future that holds the asking client's result, so the engine goes on with
that client while the actors keep training. Every later client of the round picks up its own
result the same way, at its own simulated time, so the timeline is the local backend's.

Tables equal the local backend's for the same seed (host-time columns aside): a client's batch
order and (sequential path) dropout masks depend only on (seed, client, round), and the batched
path's units of work are the local chunks themselves (``cohort_chunks``), each trained by one
actor under its local chunk number, so even dropout draws per chunk are the same. Actors get only
plaintext states, as local trainers do; no key material ever leaves the client processes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fedsim.placement import resolve_placement
from fedsim.trainers import (
    BatchedTrainer,
    ClientJob,
    Kernels,
    LocalWork,
    SequentialTrainer,
    TrainOutcome,
    cohort_chunks,
    flat_state,
    planned_work,
)

log = logging.getLogger(__name__)


class RayBackendError(RuntimeError):
    """Ray cannot provide what the run asks for (no cluster, too few CPUs or GPUs)."""


@dataclass(frozen=True)
class Unit:
    """A piece of a cohort that one actor trains in one go: a chunk of the batched trainer
    (``chunk`` is its local number) or clients trained one by one (``chunk is None``)."""

    cids: tuple[int, ...]
    chunk: int | None


@dataclass(frozen=True)
class ActorSpec:
    """What every actor of a run is built from (shipped once, at start-up)."""

    seed: int
    work: LocalWork
    batched: bool  # compute.trainer == "batched"
    max_clients: int
    kernels: Kernels
    threads: int  # torch CPU threads per actor


@dataclass(frozen=True)
class SharedTensor:
    """A host tensor in Ray's object store, read back zero-copy with its original strides.

    Strides matter: a size-1 dimension may carry any stride, and PyTorch picks a convolution's
    memory format (so its float summation order) from the strides; the object store keeps the
    buffer (a C-ordered numpy array) but not them.
    """

    ref: Any  # ray.ObjectRef of the numpy array
    stride: tuple[int, ...]

    @classmethod
    def put(cls, t: torch.Tensor) -> SharedTensor:
        import ray

        t = t.contiguous()  # C order in memory (the strides of size-1 dimensions are kept)
        return cls(ray.put(t.numpy()), t.stride())

    def get(self) -> torch.Tensor:
        """The tensor, a read-only view of the object store's copy on this node."""
        import ray

        array = ray.get(self.ref)
        with warnings.catch_warnings():  # object-store arrays are read-only; training never writes
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(array).as_strided(array.shape, self.stride)


class TrainingActor:
    """One Ray actor: the training set (zero-copy from the object store), a model, and the local
    backend's trainer. Built by :func:`start_actors` (``ray.remote`` is applied there)."""

    def __init__(self, model: nn.Module, x: SharedTensor, y: SharedTensor, spec: ActorSpec,
                 device: str):
        torch.set_num_threads(spec.threads)
        torch.use_deterministic_algorithms(True, warn_only=True)
        placement = resolve_placement(device)
        x_dev, y_dev = placement.tensor(x.get()), placement.tensor(y.get())
        self.jobs: dict[int, ClientJob] = {}  # the current call's jobs (the trainers read it)
        model = placement.module(model)
        if spec.batched:
            self.batched: BatchedTrainer | None = BatchedTrainer(
                model, x_dev, y_dev, placement, self.jobs, spec.seed, spec.work,
                spec.max_clients, spec.kernels)
            self.sequential = self.batched.sequential
        else:
            self.batched = None
            self.sequential = SequentialTrainer(model, x_dev, y_dev, placement, self.jobs,
                                                spec.seed, spec.kernels)

    def ready(self) -> bool:
        """Returns once the actor is built (start-up is asynchronous)."""
        return True

    def train(self, rnd: int, global_state: Mapping[str, torch.Tensor],
              jobs: Mapping[int, ClientJob], units: Sequence[Unit]) -> dict[int, TrainOutcome]:
        """Train ``units`` of round ``rnd`` from ``global_state``; states come back on the host."""
        self.jobs.clear()
        self.jobs.update(jobs)
        out: dict[int, TrainOutcome] = {}
        for unit in units:
            if unit.chunk is None:  # one by one (each state is the shared model's: copy it now)
                out.update({c: _compact(self.sequential.train(c, rnd, global_state))
                            for c in unit.cids})
            else:
                assert self.batched is not None
                done = self.batched.train_chunk(rnd, list(unit.cids), global_state, unit.chunk)
                out.update({c: _compact(o) for c, o in done.items()})
        return out


def _compact(outcome: TrainOutcome) -> TrainOutcome:
    """``outcome`` with its own host copy of each state entry (a view of a shared model or of a
    chunk's stacked weights would be only valid until the next client, or pickle the stack)."""
    state = {n: v.detach().to("cpu", copy=True) for n, v in outcome.state.items()}
    return TrainOutcome(state, outcome.result, outcome.host_seconds)


def split_units(units: Sequence[Unit], jobs: Mapping[int, ClientJob],
                actors: int) -> list[list[Unit]]:
    """Assign units (in slot order) to actors, each to the one with the fewest samples so far
    (ties: the lowest index). Deterministic; the result never depends on which actor trains."""
    loads = [0] * actors
    shares: list[list[Unit]] = [[] for _ in range(actors)]
    for unit in units:
        a = loads.index(min(loads))
        shares[a].append(unit)
        loads[a] += sum(len(jobs[c].indices) for c in unit.cids)
    return shares


@dataclass
class _Round:
    """A round in flight: the global model it trains from and where each result is."""

    flat: torch.Tensor
    where: dict[int, Any]  # client -> the ObjectRef of its unit's results
    got: dict[Any, dict[int, TrainOutcome]] = field(default_factory=dict)  # ref -> results


class RayTrainer:
    """The :class:`~fedsim.trainers.Trainer` of ``compute.backend: ray``.

    ``model`` is the engine's own device model (it evaluates global models with it);
    ``actors`` are :class:`TrainingActor` handles; ``jobs`` is the engine's job table.
    """

    def __init__(self, model: nn.Module, actors: list[Any], jobs: Mapping[int, ClientJob],
                 spec: ActorSpec):
        self.model, self.actors, self.jobs, self.spec = model, actors, jobs, spec
        self._cohorts: dict[int, list[int]] = {}
        self._rounds: dict[int, _Round] = {}

    def cohort(self, rnd: int, cids: Sequence[int]) -> None:
        """The server sent round ``rnd``'s model to ``cids`` (slot order): they train on the
        actors as soon as the first of them has the global model."""
        self._cohorts[rnd] = list(cids)

    def planned(self, cid: int, rnd: int) -> tuple[int, int]:
        return planned_work(self.spec.seed, cid, rnd, self.jobs[cid])

    def train(self, cid: int, rnd: int, global_state: Mapping[str, torch.Tensor]) -> TrainOutcome:
        """Client ``cid``'s result; the first call of a round dispatches its whole cohort."""
        import ray

        flat = flat_state(global_state)
        if rnd in self._cohorts:
            self._dispatch(rnd, self._cohorts.pop(rnd), global_state, flat)
        r = self._rounds.get(rnd)
        if r is None or cid not in r.where or not torch.equal(flat, r.flat):
            if r is not None and cid in r.where:
                log.warning("round %d: client %d starts from another model than its cohort; "
                            "it trains alone", rnd, cid)
            unit = Unit((cid,), None)
            ref = self.actors[cid % len(self.actors)].train.remote(
                rnd, global_state, {cid: self.jobs[cid]}, [unit])
            return ray.get(ref)[cid]
        ref = r.where.pop(cid)
        if ref not in r.got:
            r.got[ref] = ray.get(ref)
        outcome = r.got[ref].pop(cid)
        if not r.where:
            del self._rounds[rnd]
        return outcome

    def _dispatch(self, rnd: int, cids: list[int], global_state: Mapping[str, torch.Tensor],
                  flat: torch.Tensor) -> None:
        """Send round ``rnd``'s cohort to the actors (returns at once)."""
        import ray

        if self.spec.batched:
            chunks, alone = cohort_chunks(cids, self.jobs, self.spec.work, self.spec.max_clients)
            units = [Unit(tuple(c), i) for i, c in enumerate(chunks)]
            units += [Unit((c,), None) for c in alone]
        else:
            units = [Unit((c,), None) for c in cids]
        state_ref = ray.put(dict(global_state))  # shipped once, read by every actor
        where: dict[int, Any] = {}
        for actor, share in zip(self.actors, split_units(units, self.jobs, len(self.actors))):
            for unit in share:  # one call per unit: its clients' results come back as it ends
                ref = actor.train.remote(rnd, state_ref, {c: self.jobs[c] for c in unit.cids},
                                         [unit])
                where.update(dict.fromkeys(unit.cids, ref))
        self._rounds[rnd] = _Round(flat, where)


def actor_count(threads: int, requested: int | None, use_gpus: bool) -> int:
    """The number of actors: ``requested``, else one per GPU of the cluster (``use_gpus``), else
    one per ``threads`` CPU cores of the cluster (at least one)."""
    import ray

    total = ray.cluster_resources()
    if requested is not None:
        return requested
    if use_gpus and total.get("GPU", 0) >= 1:
        return int(total["GPU"])
    return max(1, int(total.get("CPU", 1)) // threads)


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[None]:
    """Connect to the Ray cluster at ``address`` (or start a local instance when ``None``)
    unless this process already is; disconnect (stop the local instance) at the end if this
    call connected."""
    import ray

    if ray.is_initialized():
        yield
        return
    if address:
        _check_reachable(address)
    local = not address and not os.environ.get("RAY_ADDRESS")
    # Ray runs its workers at nice 15; a local instance's actors do this command's training, so
    # they run at the priority the local backend would (on a shared machine it matters)
    extra = {"_system_config": {"worker_niceness": 0}} if local else {}
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, **extra)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"at {address}" if address else "(local instance)"
        raise RayBackendError(f"compute.backend ray: cannot start or reach Ray {where}: "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
                              ) from None
    try:
        yield
    finally:
        ray.shutdown()


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail at once, with one line, when a ``host:port`` address does not answer (Ray itself
    retries for minutes); other forms (``auto``, ``ray://...``) are left to Ray."""
    match = re.fullmatch(r"([\w.\-]+):(\d+)", address)
    if match is None:
        return
    try:
        socket.create_connection((match[1], int(match[2])), timeout=timeout_s).close()
    except OSError as exc:
        raise RayBackendError(f"Ray address {address}: no Ray cluster answers there ({exc}); "
                              "start one with `ray start --head`") from None


def start_actors(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: ActorSpec,
                 count: int, device: str) -> list[Any]:
    """Put the training set in the object store once and start ``count`` actors training on
    ``device`` (each reserves ``spec.threads`` CPUs, and one GPU on ``cuda``); returns once
    all are built."""
    import ray

    gpus = device == "cuda"
    need_cpu, need_gpu = count * spec.threads, count if gpus else 0
    total = ray.cluster_resources()
    if need_cpu > total.get("CPU", 0) or need_gpu > total.get("GPU", 0):
        raise RayBackendError(
            f"compute.ray_actors: {count} actors need {need_cpu} CPUs"
            + (f" and {need_gpu} GPUs" if gpus else "")
            + f"; the Ray cluster has {total.get('CPU', 0):g} CPUs and {total.get('GPU', 0):g} GPUs"
            " (lower compute.ray_actors or compute.ray_threads_per_actor)")
    x_ref, y_ref = SharedTensor.put(x), SharedTensor.put(y)
    remote = ray.remote(num_cpus=spec.threads, num_gpus=1 if gpus else 0,
                        max_restarts=0)(TrainingActor)
    actors = [remote.remote(model, x_ref, y_ref, spec, device) for _ in range(count)]
    try:
        ray.get([a.ready.remote() for a in actors])
    except BaseException:
        stop_actors(actors)
        raise
    return actors


def stop_actors(actors: list[Any]) -> None:
    """Kill the actors now (their work in flight is dropped)."""
    import ray

    for actor in actors:
        ray.kill(actor, no_restart=True)


@contextlib.contextmanager
def ray_trainer(model: nn.Module, host_model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                jobs: Mapping[int, ClientJob], spec: ActorSpec, torch_device: str,
                requested_actors: int | None, address: str | None = None
                ) -> Iterator[tuple[RayTrainer, dict[str, Any]]]:
    """A :class:`RayTrainer` on ``requested_actors`` actors (default: :func:`actor_count`) and
    its run_info entries; its actors (and a Ray instance started here) are gone afterwards,
    also after an error or Ctrl-C. ``model`` is the engine's device model (evaluation),
    ``host_model`` the host copy the actors start from; ``x``, ``y`` the host training set;
    ``torch_device`` the run's ``compute.torch_device``."""
    h0 = time.perf_counter()
    with ray_session(address):
        h1 = time.perf_counter()
        device = actor_device(torch_device)
        count = actor_count(spec.threads, requested_actors, device == "cuda")
        actors = start_actors(host_model, x, y, spec, count, device)
        h2 = time.perf_counter()
        try:
            yield RayTrainer(model, actors, jobs, spec), {
                "ray_actors": count, "ray_threads_per_actor": spec.threads,
                "ray_actor_device": device, "ray_connect_seconds": h1 - h0,
                "ray_actors_start_seconds": h2 - h1}
        finally:
            stop_actors(actors)


def actor_device(torch_device: str) -> str:
    """The actors' torch device for ``compute.torch_device``: ``cuda`` (one GPU per actor) when
    CUDA is asked for or allowed (``auto``) and the cluster has GPUs, else ``cpu`` (``guard``
    stays ``guard``); a CUDA request on a cluster without GPUs is a :class:`RayBackendError`."""
    import ray

    has_gpu = ray.cluster_resources().get("GPU", 0) >= 1
    if torch_device in ("cpu", "guard"):
        return torch_device
    if has_gpu:
        return "cuda"
    if torch_device != "auto":
        raise RayBackendError(f"compute.torch_device {torch_device}: the Ray cluster has no GPUs")
    return "cpu"
