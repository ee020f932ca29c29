"""The asynchronous (FedBuff) server process: clients train all the time, the server aggregates
whenever its buffer is full, and each finished client is replaced at once.

Rounds are aggregations. A client dispatched while round ``r`` is in progress trains on model
version ``r - 1`` (the global model after ``r - 1`` aggregations) and its messages carry round
``r``; a client trains at most once per round, so every per-(client, round) random stream stays
unique. Its update's staleness is the number of aggregations between its version and the one it
updates: ``applied_round - r``.
"""

from __future__ import annotations

import time

import simpy
import torch

from fedsim.codecs.base import UpdateCodec
from fedsim.message import payload_bytes
from fedsim.nodes.availability import Availability
from fedsim.nodes.policy import BufferedUpdate, FedBuffPolicy
from fedsim.nodes.router import Router
from fedsim.nodes.server import Server, ServerSettings, client_name
from fedsim.recorder import Recorder
from fedsim.wire import pack_vector


class AsyncServer(Server):
    """FedBuff: ``concurrency`` clients training, an aggregation every ``buffer_size`` updates.

    If every dispatched client has reported and the buffer is still short (dropouts, or too few
    eligible clients), the server aggregates what it has rather than wait forever.
    """

    def __init__(self, env: simpy.Environment, router: Router, inbox: simpy.FilterStore,
                 codec: UpdateCodec, policy: FedBuffPolicy, settings: ServerSettings,
                 clients: list[int], availability: Availability, recorder: Recorder,
                 initial: torch.Tensor | None, *, concurrency: int, buffer_size: int, **kwargs):
        super().__init__(env, router, inbox, codec, policy, settings, clients, availability,
                         recorder, initial, **kwargs)
        self.concurrency, self.buffer_size = concurrency, buffer_size

    def run(self):
        """Set-up, then serve arrivals until ``rounds`` aggregations are done."""
        yield from self._set_up_round()
        busy: dict[str, int] = {}  # client name -> round it was dispatched in
        rnd, period = 1, _Period(self.env.now)
        buffer: list[BufferedUpdate] = []
        self._dispatch(rnd, busy, period)
        while rnd <= self.settings.rounds:
            if busy:
                msg = yield self.inbox.get(lambda m: m.src in busy and m.kind in ("update_up",
                                                                                    "dropout"))
                dispatched = busy.pop(msg.src)
                if msg.kind == "dropout":
                    period.dropouts += 1
                else:
                    buffer.append(BufferedUpdate(dispatched, int(msg.src.split("/")[1]),
                                                 payload_bytes(msg.payload), rnd - dispatched))
            if len(buffer) >= self.buffer_size or (not busy and not self._eligible(rnd, busy, period)):
                self._aggregate(rnd, buffer, period)
                if self.diverged_round is not None or rnd == self.settings.rounds:
                    break
                rnd, period, buffer = rnd + 1, _Period(self.env.now), []
                yield self.env.timeout(0)  # let the engine evaluate the new model
                if self._out_of_time():
                    break
            self._dispatch(rnd, busy, period)
        self.done.succeed()

    def _out_of_time(self) -> bool:
        return self.settings.time_budget_s is not None and self.env.now >= self.settings.time_budget_s

    def _eligible(self, rnd: int, busy: dict[str, int], period: _Period) -> list[int]:
        """Online clients not training and not yet dispatched in round ``rnd`` (sorted ids)."""
        return [c for c in self._ids if client_name(c) not in busy and c not in period.dispatched
                and self.availability.available(c, rnd)]

    def _dispatch(self, rnd: int, busy: dict[str, int], period: _Period) -> None:
        """Top the clients in training up to ``concurrency`` with the current global model."""
        chosen = self.policy.select(rnd, self._eligible(rnd, busy, period),
                                    self.concurrency - len(busy))
        if not chosen:
            return
        if self._on_dispatch is not None:
            self._on_dispatch(rnd, chosen)
        payload = pack_vector(self.global_wire)
        for cid in chosen:
            self._send_model(rnd, len(period.dispatched), cid, payload)
            period.dispatched.append(cid)
            busy[client_name(cid)] = rnd

    def _aggregate(self, rnd: int, buffer: list[BufferedUpdate], period: _Period) -> None:
        if buffer:
            self.recorder.aggregated.update((u.round, u.client) for u in buffer)
            self.recorder.applied.update({(u.round, u.client): rnd for u in buffer})
            self.global_wire = self.policy.aggregate(rnd, self.global_wire, buffer)
            if not bool(torch.isfinite(self.global_wire).all()):
                self.diverged_round = rnd
        self._finish_round(rnd, period.t_start, period.h_start, period.dispatched, len(buffer),
                           period.dropouts, 0, 0)


class _Period:
    """Bookkeeping of the round in progress."""

    def __init__(self, t_start: float):
        self.t_start, self.h_start = t_start, time.perf_counter()
        self.dispatched: list[int] = []
        self.dropouts = 0
