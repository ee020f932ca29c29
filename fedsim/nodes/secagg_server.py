"""The secure-aggregation server process (Bonawitz et al. 2017): four message rounds per FL
round, and a global step computed from the exact sum of the survivors' fixed-point updates."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import torch

from fedsim.message import Message
from fedsim.nodes.server import Server, client_name
from fedsim.secagg import Ring, SecAggAbort, ServerRound, threshold_count
from fedsim.secagg.wire import ABORT


class SecAggServer(Server):
    """A synchronous server that only ever sees masked updates and their unmasked sum.

    Per round: the model broadcast, then AdvertiseKeys, ShareKeys, MaskedInputCollection and
    Unmasking (:mod:`fedsim.secagg.protocol`), each a real exchange over the clients' links.
    The server waits in each phase for every expected client's message or its dropout; if fewer
    than the threshold remain it tells the others (``sa_abort``) and the round ends without an
    update (``secagg_status`` in the rounds table says where). Otherwise the global model moves
    by the weighted mean that the unmasked sum encodes (:meth:`fedsim.secagg.Ring.decode_mean`).
    The policy only selects; the clients apply their weights before masking.
    """

    def __init__(self, *args, ring: Ring, threshold: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.ring, self.threshold = ring, threshold

    def _round(self, rnd: int):
        t_start, h_start = self.env.now, time.perf_counter()
        selected = self._dispatch_round(rnd)
        proto = ServerRound(self.ring, self.global_wire.numel(),
                            threshold_count(self.threshold, len(selected)))
        dropouts, survivors, status = 0, [], "ok"
        waiting: list[int] = []  # clients waiting for the server's next message
        try:
            advertised: dict[int, bytes] = {}
            dropouts += yield from self._collect(rnd, "sa_advertise", selected,
                                                 advertised.__setitem__)
            waiting = sorted(advertised)
            keys = proto.key_list(advertised)
            self._tell(rnd, "sa_keys", waiting, lambda _: keys)
            shares: dict[int, bytes] = {}
            dropouts += yield from self._collect(rnd, "sa_shares", waiting, shares.__setitem__)
            waiting = sorted(shares)
            routed = proto.route(shares)
            self._tell(rnd, "sa_routed", waiting, routed.__getitem__)
            dropouts += yield from self._collect(
                rnd, "masked_update", waiting,
                lambda c, p: (proto.add_masked(c, p), survivors.append(c)))
            waiting = sorted(survivors)
            request = proto.unmask_request()
            self._tell(rnd, "sa_unmask", waiting, lambda _: request)
            reveals: dict[int, bytes] = {}
            dropouts += yield from self._collect(rnd, "sa_reveal", waiting, reveals.__setitem__)
            waiting = []
            total = proto.unmask(reveals)
        except SecAggAbort as exc:
            status = f"aborted: {exc}"
            self._tell(rnd, "sa_abort", waiting, lambda _: ABORT)
            survivors = []
        if survivors:
            self.recorder.aggregated.update((rnd, c) for c in survivors)
            self.global_wire = self.global_wire + self.ring.decode_mean(total)
            if not bool(torch.isfinite(self.global_wire).all()):
                self.diverged_round = rnd
        self._finish_round(rnd, t_start, h_start, selected, len(survivors), dropouts, 0,
                           n_surplus=len(selected) - len(survivors) - dropouts)
        self.recorder.rounds[-1]["secagg_status"] = status

    def _collect(self, rnd: int, kind: str, expected: Iterable[int],
                 take: Callable[[int, bytes], object]):
        """Wait until each ``expected`` client sent ``kind`` (passed to ``take`` with its id) or
        dropped out; returns the number that dropped out."""
        waiting = {client_name(c) for c in expected}
        dropouts = 0
        while waiting:
            msg = yield self.inbox.get(lambda m: m.round == rnd and m.src in waiting
                                       and m.kind in (kind, "dropout"))
            waiting.discard(msg.src)
            if msg.kind == "dropout":
                dropouts += 1
            else:
                take(int(msg.src.split("/")[1]), msg.payload)
        return dropouts

    def _tell(self, rnd: int, kind: str, cids: Iterable[int],
              payload: Callable[[int], bytes]) -> None:
        """Send ``kind`` with ``payload(cid)`` to each of ``cids``."""
        for cid in sorted(cids):
            self.router.send(Message(kind, self.name, client_name(cid), rnd, payload(cid)))
