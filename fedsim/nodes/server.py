"""The server process: selects clients, broadcasts the global model, aggregates updates."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import simpy
import torch

from fedsim.codecs.base import UpdateCodec
from fedsim.message import Message, payload_bytes
from fedsim.nodes.availability import Availability
from fedsim.nodes.policy import ServerPolicy, Update
from fedsim.nodes.router import Router
from fedsim.recorder import Recorder
from fedsim.wire import pack_vector, unpack_vector


@dataclass(frozen=True)
class ServerSettings:
    """The server's protocol parameters (from the run config)."""

    rounds: int
    clients_per_round: int  # m: updates the server waits for (the first m of those selected)
    deadline_s: float | None  # simulated seconds after dispatch; later updates are dropped
    time_budget_s: float | None  # no round starts after this simulated time


def client_name(cid: int) -> str:
    return f"client/{cid}"


class Server:
    """A synchronous FL server holding the global model as a flat wire-domain vector.

    The server runs the protocol (dispatch, waiting, deadlines, bookkeeping); its ``policy``
    decides who takes part and how updates combine.

    Notes
    -----
    The server never holds key material: it sees only wire vectors and codec payloads, and it
    does not evaluate the model (the engine does, outside the protocol).
    """

    name = "server"

    def __init__(self, env: simpy.Environment, router: Router, inbox: simpy.FilterStore,
                 codec: UpdateCodec, policy: ServerPolicy, settings: ServerSettings,
                 clients: list[int], availability: Availability, recorder: Recorder,
                 initial: torch.Tensor | None, init_broadcast: bytes | None = None,
                 on_dispatch: Callable[[int, list[int]], None] | None = None,
                 on_accepted: Callable[[int, list[int]], None] | None = None):
        self.env, self.router, self.inbox, self.codec = env, router, inbox, codec
        self.policy, self.settings = policy, settings
        self.availability, self.recorder = availability, recorder
        self.global_wire = initial
        self._ids = sorted(clients)  # registered clients
        self._setup_payload = codec.setup_payload()  # e.g. the ENN encoder, sent once per client
        self._set_up: set[int] = set()
        self.done = env.event()
        self._init_broadcast = init_broadcast  # plaintext initial model every client gets once
        # engine hook: called with (round, selected clients in slot order) before the broadcast
        self._on_dispatch = on_dispatch
        # engine hook: (round, the clients whose updates it aggregates, slot order), before any
        # deferred update is computed
        self._on_accepted = on_accepted
        self.diverged_round: int | None = None  # first round whose global model is not finite
        self.first_round = 1  # > 1 when resumed from a checkpoint (set-up already done)

    def select(self, rnd: int) -> list[int]:
        """The policy's choice among the clients available in ``rnd`` (slot order)."""
        return self.policy.select(rnd, [c for c in self._ids if self.availability.available(c, rnd)])

    def run(self):
        """Set-up (wait for a client-initialised model if needed), then one loop per round."""
        if self.first_round == 1:
            yield from self._set_up_round()
        for rnd in range(self.first_round, self.settings.rounds + 1):
            if self.settings.time_budget_s is not None and self.env.now >= self.settings.time_budget_s:
                break
            yield from self._round(rnd)
            yield self.env.timeout(0)
            if self.diverged_round is not None:
                break  # NaN/inf never recovers: stop this scheme, keep its tables
        self.done.succeed()

    def _set_up_round(self):
        """Round 0: the initial model (sent in plaintext, or received from client 0)."""
        t0, h0 = self.env.now, time.perf_counter()
        if self._init_broadcast is not None:
            for cid in self._ids:
                self.router.send(Message("init_plain", self.name, client_name(cid), 0,
                                         self._init_broadcast))
        if self.global_wire is None:
            msg = yield self.inbox.get(lambda m: m.kind == "model_init")
            self.global_wire = unpack_vector(msg.payload)
        self._finish_round(0, t0, h0, [], 0, 0, 0, 0)
        yield self.env.timeout(0)  # let the engine evaluate before the next round starts

    def _round(self, rnd: int):
        t_start, h_start = self.env.now, time.perf_counter()
        selected = self._dispatch_round(rnd)
        slots = {client_name(c): slot for slot, c in enumerate(selected)}
        waiting = set(slots)
        m = min(self.settings.clients_per_round, len(selected))
        accepted: list[Message] = []
        n_dropout = 0
        deadline = (self.env.timeout(self.settings.deadline_s)
                    if self.settings.deadline_s is not None else None)
        while waiting and len(accepted) < m:
            get = self.inbox.get(lambda msg: msg.round == rnd and msg.src in waiting)
            if deadline is not None:
                yield get | deadline
                if not get.triggered:
                    get.cancel()
                    break
            else:
                yield get
            msg = get.value
            waiting.discard(msg.src)
            if msg.kind == "dropout":
                n_dropout += 1
            elif msg.kind == "update_up":
                accepted.append(msg)
        # what is left of this round (and earlier ones) will never be used: stragglers dropped
        self.inbox.items[:] = [msg for msg in self.inbox.items if msg.round > rnd]
        if accepted:
            accepted.sort(key=lambda msg: slots[msg.src])
            cids = [int(msg.src.split("/")[1]) for msg in accepted]
            self.recorder.aggregated.update((rnd, c) for c in cids)
            if self._on_accepted is not None:
                self._on_accepted(rnd, cids)
            updates = [Update(slots[msg.src], c, payload_bytes(msg.payload))  # deferred: train now
                       for msg, c in zip(accepted, cids)]
            self.global_wire = self.policy.aggregate(rnd, self.global_wire, updates)
            if not bool(torch.isfinite(self.global_wire).all()):
                self.diverged_round = rnd
        n_late = len(waiting) if len(accepted) < m else 0
        self._finish_round(rnd, t_start, h_start, selected, len(accepted), n_dropout, n_late,
                           n_surplus=len(selected) - len(accepted) - n_dropout - n_late)

    def _dispatch_round(self, rnd: int) -> list[int]:
        """Select round ``rnd``'s clients, announce them (engine hook) and send each the global
        model with its slot; the selected clients in slot order."""
        selected = self.select(rnd)
        if self._on_dispatch is not None:
            self._on_dispatch(rnd, selected)
        payload = pack_vector(self.global_wire)
        codec_round = self.codec.round_payload(rnd, self.global_wire) if selected else None
        for slot, cid in enumerate(selected):
            self._send_model(rnd, slot, cid, payload, codec_round)
        return selected

    def _send_model(self, rnd: int, slot: int, cid: int, payload: bytes,
                    codec_round: bytes | None = None) -> None:
        """Send round ``rnd``'s global model (``payload``) to ``cid`` at ``slot``, after the codec's
        one-time set-up if the client has not had it yet and the round's codec state if any."""
        if self._setup_payload is not None and cid not in self._set_up:
            self._set_up.add(cid)
            self.router.send(Message("codec_setup", self.name, client_name(cid), rnd,
                                     self._setup_payload))
        if codec_round is not None:
            self.router.send(Message("codec_round", self.name, client_name(cid), rnd, codec_round))
        self.router.send(Message("model_down", self.name, client_name(cid), rnd, payload,
                                 meta={"slot": slot}))

    def _finish_round(self, rnd: int, t_start: float, h_start: float, selected: list[int],
                      n_accepted: int, n_dropout: int, n_late: int, n_surplus: int) -> None:
        self.recorder.rounds.append({
            "round": rnd, "sim_time_start": t_start, "sim_time_end": self.env.now,
            "n_selected": len(selected), "n_completed": n_accepted,
            "n_dropped": len(selected) - n_accepted, "n_dropout": n_dropout, "n_late": n_late,
            "n_surplus": n_surplus, "host_seconds": time.perf_counter() - h_start,
            "diverged": self.diverged_round == rnd,
        })
        self.recorder.snapshots.append((rnd, self.global_wire.clone()))
