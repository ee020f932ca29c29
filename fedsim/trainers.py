"""Local training services: one client at a time, or a whole cohort as one vectorized computation.

Layer 1 (pure PyTorch, no simpy). A client's local training is a function of the global model it
received, its data and its seeds, never of simulated time, so the engine may compute it whenever
it likes. The :class:`SequentialTrainer` trains the client that asks, on one shared model. The
:class:`BatchedTrainer` trains every client of a cohort (the clients the server sent the same
global model) together the first time one of them asks, and hands each its own result later.

Batched training stacks the clients' parameters, buffers and momentum along a new leading axis
and runs ``torch.func.vmap`` over ``functional_call`` of the model: the same kernels per client,
launched once for the cohort. Only the forward pass is vmapped; one ordinary backward pass of the
summed losses gives every client its own gradient (a client's loss depends on its parameters
alone), with less per-step overhead than ``vmap(grad(...))``. Step schedules need not be equal: at step ``t`` the clients that
take a step are grouped by their batch size (a last partial batch, or a client with fewer steps,
forms its own group), so no client is ever padded or masked into a momentum or weight-decay step
and BatchNorm statistics only ever see real samples. BatchNorm buffers stay per client.

Differences from the sequential trainer: float results agree to about 1e-7 relative (vmap's
batched kernels sum in another order); dropout masks are drawn per (round, chunk of clients)
from ``seed_for(seed, "trainer", "dropout", round, chunk)``, not per (client, round), so models
with dropout train differently (deterministically) on the two paths.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from fedsim.placement import Placement
from fedsim.rng import seed_for, torch_generator
from fedsim.training import LocalTrainResult, autocast, batch_schedule, train_local

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalWork:
    """Local-training settings of one client (shared by all clients of a run, except targets of
    an attack-friendly adversary)."""

    epochs: int | None
    steps: int | None
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float


@dataclass(frozen=True)
class Kernels:
    """How the host computes a training step (never what is simulated): ``compile`` wraps the
    step in ``torch.compile`` (``reduce-overhead``, i.e. CUDA graphs, on CUDA); ``precision``
    is ``fp32`` or ``bf16`` (autocast)."""

    compile: bool = False
    precision: str = "fp32"


@dataclass(frozen=True)
class ClientJob:
    """What a trainer needs to train one client: its sample indices (into the training set) and
    its local work."""

    indices: torch.Tensor
    work: LocalWork


@dataclass(frozen=True)
class TrainOutcome:
    """One client's trained state (float entries on the host or the device), what it did, and the
    host seconds charged to it."""

    state: Mapping[str, torch.Tensor]
    result: LocalTrainResult
    host_seconds: float


class Trainer(Protocol):
    """What a client process asks of local training (both trainers below). ``model`` is the
    device model the engine also evaluates the global model with."""

    model: nn.Module

    def cohort(self, rnd: int, cids: Sequence[int]) -> None:
        """The server sent round ``rnd``'s global model to ``cids`` (in slot order)."""

    def train(self, cid: int, rnd: int, global_state: Mapping[str, torch.Tensor]) -> TrainOutcome:
        """Client ``cid``'s local training of round ``rnd``, starting from ``global_state``."""

    def planned(self, cid: int, rnd: int) -> tuple[int, int]:
        """``(steps, samples)`` client ``cid``'s training of round ``rnd`` will do, without doing
        it (its simulated compute time depends on nothing else)."""


def planned_work(seed: int, cid: int, rnd: int, job: ClientJob) -> tuple[int, int]:
    """``(steps, samples)`` of the client's round ``rnd``: its batch count and their summed size."""
    batches = client_batches(seed, cid, rnd, job)
    return len(batches), sum(len(b) for b in batches)


def client_batches(seed: int, cid: int, rnd: int, job: ClientJob) -> list[torch.Tensor]:
    """The client's index batches of round ``rnd`` (training-set indices, on the host)."""
    w = job.work
    order = batch_schedule(len(job.indices), batch_size=w.batch_size, epochs=w.epochs,
                           steps=w.steps, generator=torch_generator(seed, "client", cid, "batches", rnd))
    return [job.indices[b] for b in order]


def cohort_chunks(cids: Sequence[int], jobs: Mapping[int, ClientJob], work: LocalWork,
                  max_clients: int) -> tuple[list[list[int]], list[int]]:
    """How the batched trainer splits a cohort (slot order): the clients with the run's common
    ``work`` in chunks of at most ``max_clients`` (chunk ``i`` draws its dropout masks from
    stream ``i``), and the clients that train one by one (their own work)."""
    common = [c for c in cids if jobs[c].work == work]
    alone = [c for c in cids if jobs[c].work != work]
    return [common[s:s + max_clients] for s in range(0, len(common), max_clients)], alone


def flat_state(state: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """A state's entries as one flat float32 host vector (to tell models apart)."""
    return torch.cat([v.detach().reshape(-1).float().cpu() for v in state.values()])


class SequentialTrainer:
    """Trains each client on one shared model when it asks (the reference path)."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, placement: Placement,
                 jobs: Mapping[int, ClientJob], seed: int, kernels: Kernels = Kernels()):
        self.model, self.x, self.y, self.placement = model, x, y, placement
        self.jobs, self.seed, self.kernels = jobs, seed, kernels
        if kernels.precision == "bf16" and any(isinstance(m, nn.Conv2d) for m in model.modules()):
            self.model = model.to(memory_format=torch.channels_last)
            self.x = x.contiguous(memory_format=torch.channels_last)
        if kernels.compile:
            self.model.compile(mode=_compile_mode(placement))

    def cohort(self, rnd: int, cids: Sequence[int]) -> None:
        """The server sent round ``rnd``'s model to ``cids`` (nothing to prepare here)."""

    def planned(self, cid: int, rnd: int) -> tuple[int, int]:
        return planned_work(self.seed, cid, rnd, self.jobs[cid])

    def train(self, cid: int, rnd: int, global_state: Mapping[str, torch.Tensor]) -> TrainOutcome:
        """Train client ``cid`` from ``global_state``; the returned state is the shared model's and
        is only valid until the next call."""
        h0 = time.perf_counter()
        job = self.jobs[cid]
        self.model.load_state_dict(global_state, strict=False)
        batches = client_batches(self.seed, cid, rnd, job)
        # one host-to-device copy per client-round; the batches are views of it
        order = self.placement.tensor(torch.cat(batches))
        on_device = order.split([len(b) for b in batches])
        # dropout draws from the global RNG: seed it per (client, round), not by event order
        with torch.random.fork_rng(devices=[self.x.device] if self.placement.is_cuda else []):
            torch.manual_seed(seed_for(self.seed, "client", cid, "dropout", rnd))
            w = job.work
            result = train_local(self.model, self.x, self.y, on_device, lr=w.lr,
                                 momentum=w.momentum, weight_decay=w.weight_decay,
                                 precision=self.kernels.precision)
        return TrainOutcome(self.model.state_dict(), result, time.perf_counter() - h0)


class BatchedTrainer:
    """Trains a cohort's clients together (``vmap``), in chunks of at most ``max_clients``.

    Clients whose local work differs from the run's common work (attack-friendly targets) are
    trained one by one by the sequential path. With ``timing: measured`` each client of a chunk is
    charged the chunk's host seconds divided by its size.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, placement: Placement,
                 jobs: Mapping[int, ClientJob], seed: int, work: LocalWork, max_clients: int,
                 kernels: Kernels = Kernels()):
        self.model, self.x, self.y, self.placement = model, x, y, placement
        self.jobs, self.seed, self.work, self.max_clients = jobs, seed, work, max_clients
        self.kernels = kernels
        self.sequential = SequentialTrainer(model, x, y, placement, jobs, seed,
                                            Kernels(precision=kernels.precision))
        forward = vmap(self._loss, in_dims=(0, 0, 0, 0), randomness="different")
        if kernels.compile:
            forward = torch.compile(forward, mode=_compile_mode(placement))
        self._forward = forward
        self._step = placement.kernel(self._grads_and_losses)
        self._cohorts: dict[int, list[list[int]]] = {}  # round -> its chunks
        self._done: dict[tuple[int, int], TrainOutcome] = {}
        self._global: dict[int, torch.Tensor] = {}  # round -> flat global model it was trained from
        self._names = list(model.state_dict())
        self._params = [n for n, _ in model.named_parameters()]

    def cohort(self, rnd: int, cids: Sequence[int]) -> None:
        """The server sent round ``rnd``'s model to ``cids``: they will be trained together."""
        self._cohorts[rnd], alone = cohort_chunks(cids, self.jobs, self.work, self.max_clients)
        if alone:
            log.info("round %d: clients %s train one by one (their local work differs from the "
                     "run's, e.g. attack-friendly targets)", rnd, alone)

    def planned(self, cid: int, rnd: int) -> tuple[int, int]:
        return planned_work(self.seed, cid, rnd, self.jobs[cid])

    def train(self, cid: int, rnd: int, global_state: Mapping[str, torch.Tensor]) -> TrainOutcome:
        """Client ``cid``'s result; the first call of a round trains its whole cohort."""
        if not any(cid in chunk for chunk in self._cohorts.get(rnd, ())):
            return self.sequential.train(cid, rnd, global_state)
        flat = flat_state(global_state)
        if rnd not in self._global:
            self._global[rnd] = flat
            for chunk, cids in enumerate(self._cohorts[rnd]):
                self._done.update({(rnd, c): o for c, o in
                                   self.train_chunk(rnd, cids, global_state, chunk).items()})
        elif not torch.equal(flat, self._global[rnd]):
            log.warning("round %d: client %d starts from another model than its cohort; "
                        "it trains alone", rnd, cid)
            return self.sequential.train(cid, rnd, global_state)
        outcome = self._done.pop((rnd, cid))
        if not any(r == rnd for r, _ in self._done):
            self._global.pop(rnd, None)
            self._cohorts.pop(rnd, None)
        return outcome

    def train_chunk(self, rnd: int, cids: list[int], global_state: Mapping[str, torch.Tensor],
                    chunk: int) -> dict[int, TrainOutcome]:
        """Train ``cids`` (all with the run's common work) together from ``global_state``, as
        chunk number ``chunk`` of round ``rnd`` (its dropout stream); states are on the host."""
        h0 = time.perf_counter()
        k, w = len(cids), self.work
        self.model.load_state_dict(global_state, strict=False)
        start = self.model.state_dict()
        stacks = {n: start[n].detach().unsqueeze(0).repeat(k, *([1] * start[n].dim()))
                  for n in self._names}
        params = {n: stacks[n] for n in self._params}
        buffers = {n: v for n, v in stacks.items() if n not in params}
        momentum = {n: torch.zeros_like(v) for n, v in params.items()} if w.momentum else {}
        steps = self._step_groups(rnd, cids)
        loss_sum = self.placement.tensor(torch.zeros(k))
        with torch.random.fork_rng(devices=[self.x.device] if self.placement.is_cuda else []):
            torch.manual_seed(seed_for(self.seed, "trainer", "dropout", rnd, chunk))
            self.model.train()
            for t, groups in enumerate(steps):
                for group in groups:
                    sel = None if len(group.members) == k else group.positions
                    p, b, m = (_take(d, sel) for d in (params, buffers, momentum))
                    grads, loss = self._step(p, b, self.x[group.rows], self.y[group.rows])
                    with torch.no_grad():
                        _sgd(p, grads, m, first=t == 0, work=w)
                        if sel is None:
                            loss_sum += loss.float() * group.rows.shape[1]
                        else:
                            loss_sum[sel] += loss.float() * group.rows.shape[1]
                            for n, v in {**p, **b}.items():
                                stacks[n][sel] = v
                            for n, v in m.items():
                                momentum[n][sel] = v
        host = {n: v.detach().cpu() for n, v in stacks.items()}
        losses = loss_sum.double().cpu()
        seconds = (time.perf_counter() - h0) / k
        out = {}
        for i, cid in enumerate(cids):
            taken = [g.rows.shape[1] for groups in steps for g in groups if i in g.members]
            state = {n: host[n][i] for n in self._names}
            mean = float(losses[i]) / sum(taken) if taken else 0.0
            out[cid] = TrainOutcome(state, LocalTrainResult(len(taken), sum(taken), mean), seconds)
        return out

    def _grads_and_losses(self, params, buffers, xb, yb):
        """Every client's gradient (stacked like ``params``) and loss on its batch row."""
        leaves = {n: v.detach().requires_grad_() for n, v in params.items()}
        losses = self._forward(leaves, buffers, xb, yb)
        grads = torch.autograd.grad(losses.sum(), list(leaves.values()))
        return dict(zip(leaves, grads)), losses.detach()

    def _loss(self, params, buffers, xb, yb):
        with autocast(xb.device, self.kernels.precision):
            return F.cross_entropy(functional_call(self.model, (params, buffers), (xb,)), yb)

    def _step_groups(self, rnd: int, cids: list[int]) -> list[list[_Group]]:
        """Per step, the groups of clients that share a batch size, largest batch first; their
        index rows and chunk positions reach the device in one copy."""
        batches = [client_batches(self.seed, cid, rnd, self.jobs[cid]) for cid in cids]
        layout: list[list[tuple[list[int], int]]] = []
        flat: list[torch.Tensor] = []
        for t in range(max(len(b) for b in batches)):
            by_size: dict[int, list[int]] = {}
            for i, b in enumerate(batches):
                if t < len(b):
                    by_size.setdefault(len(b[t]), []).append(i)
            groups = sorted(by_size.items(), reverse=True)
            layout.append([(members, size) for size, members in groups])
            for size, members in groups:
                flat += [batches[i][t] for i in members] + [torch.tensor(members)]
        packed = self.placement.tensor(torch.cat(flat))
        steps, at = [], 0
        for groups in layout:
            out = []
            for members, size in groups:
                n = len(members) * size
                rows = packed[at:at + n].view(len(members), size)
                positions = packed[at + n:at + n + len(members)]
                out.append(_Group(members, rows, positions))
                at += n + len(members)
            steps.append(out)
        return steps


@dataclass(frozen=True)
class _Group:
    """Clients of a chunk that take one step together: chunk positions (a host list and a device
    tensor) and their index rows (``len(members) x batch``, on the device)."""

    members: list[int]
    rows: torch.Tensor
    positions: torch.Tensor


def _compile_mode(placement: Placement) -> str:
    return "reduce-overhead" if placement.is_cuda else "default"


def _take(stacked: dict[str, torch.Tensor], sel: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The rows ``sel`` of every stacked tensor (copies), or the stacks themselves (``None``)."""
    return stacked if sel is None else {n: v[sel] for n, v in stacked.items()}


def _sgd(params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
         momentum: dict[str, torch.Tensor], *, first: bool, work: LocalWork) -> None:
    """``torch.optim.SGD`` (no dampening, no Nesterov) on stacked parameters, in place.

    On a client's first step its momentum buffer becomes its gradient, as in torch.optim.SGD.
    """
    for n, p in params.items():
        g = grads[n]
        if work.weight_decay:
            g = g.add(p, alpha=work.weight_decay)
        if work.momentum:
            buf = momentum[n]
            if first:
                buf.copy_(g)
            else:
                buf.mul_(work.momentum).add_(g)
            g = buf
        p.add_(g, alpha=-work.lr)
