"""The simulated network: directed links whose capacity is shared max-min fairly by the flows on them.

A message travels along a *path* of links (e.g. a client's uplink, then the server's ingress).
While it is being transmitted it is a *flow*; every time a flow starts or ends, the rates of all
flows are recomputed by progressive filling (max-min fairness). When the last byte has left, the
message propagates for the path's latency (the sum of its links' ``latency_s``) and arrives.

Transfer time of a lone message = latency + 8 * nbytes / bottleneck bandwidth.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import simpy

from fedsim.message import Message

_EPS_BYTES = 1e-6  # a flow with less left than this has finished (float round-off guard)
_EPS_S = 1e-12  # flows ending within this many seconds of each other end together


@dataclass(eq=False)
class Link:
    """One direction of a network link.

    Parameters
    ----------
    name
        Unique name, e.g. ``"client/3:up"`` or ``"server:ingress"``.
    bandwidth_bps
        Capacity in bits/s (``math.inf`` for an unconstrained link).
    latency_s
        One-way propagation delay in seconds, added after transmission.
    """

    name: str
    bandwidth_bps: float
    latency_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.bandwidth_bps > 0:
            raise ValueError(f"link {self.name!r}: bandwidth_bps must be > 0, got {self.bandwidth_bps}")
        if not self.latency_s >= 0:
            raise ValueError(f"link {self.name!r}: latency_s must be >= 0, got {self.latency_s}")


@dataclass(eq=False)
class Flow:
    """A message in transmission along ``path``."""

    message: Message
    path: tuple[Link, ...]
    done: simpy.Event
    t_send: float
    remaining_bytes: float
    rate_Bps: float = 0.0
    finite_links: tuple[Link, ...] = field(default=())


def max_min_rates(flows: Sequence[Flow]) -> dict[Flow, float]:
    """Max-min fair rates in bytes/s by progressive filling over the flows' finite links."""
    rates: dict[Flow, float] = {}
    capacity = {}
    members: dict[Link, list[Flow]] = {}
    for f in flows:
        if not f.finite_links:
            rates[f] = math.inf
            continue
        for link in f.finite_links:
            capacity.setdefault(link, link.bandwidth_bps / 8.0)
            members.setdefault(link, []).append(f)
    unfrozen = {link: len(fs) for link, fs in members.items()}  # link -> its unfrozen flows
    while unfrozen:
        bottleneck = min(unfrozen, key=lambda link: (capacity[link] / unfrozen[link], link.name))
        share = capacity[bottleneck] / unfrozen[bottleneck]
        for f in members[bottleneck]:
            if f in rates:
                continue
            rates[f] = share
            for link in f.finite_links:
                capacity[link] -= share
                unfrozen[link] -= 1
                if not unfrozen[link]:
                    del unfrozen[link]
    return rates


class Network:
    """Carries messages over paths of links, sharing link capacity max-min fairly.

    ``on_arrival`` observers are called as ``callback(message, path, t_send, t_arrive)`` when a
    message arrives (the recorder and any eavesdropper subscribe here).
    """

    def __init__(self, env: simpy.Environment):
        self.env = env
        self._flows: list[Flow] = []
        self._last_update = 0.0
        self._wakeup: simpy.Event | None = None
        self._observers: list[Callable[[Message, tuple[Link, ...], float, float], None]] = []
        self._abort_observers: list[Callable[[Message, tuple[Link, ...], float, float, int],
                                             None]] = []

    def subscribe(self, callback: Callable[[Message, tuple[Link, ...], float, float], None]) -> None:
        """Call ``callback`` for every message that arrives."""
        self._observers.append(callback)

    def subscribe_aborted(self, callback: Callable[[Message, tuple[Link, ...], float, float, int],
                                                   None]) -> None:
        """Call ``callback(message, path, t_send, t_abort, nbytes_sent)`` for every aborted flow."""
        self._abort_observers.append(callback)

    def send(self, message: Message, path: Sequence[Link]) -> simpy.Event:
        """Start sending ``message`` along ``path``; the returned event fires at arrival with the message."""
        self._advance()
        done = self.env.event()
        flow = Flow(message, tuple(path), done, self.env.now, float(message.nbytes),
                    finite_links=tuple(l for l in path if math.isfinite(l.bandwidth_bps)))
        self._flows.append(flow)
        self._reschedule()
        return done

    def cancel(self, event: simpy.Event) -> int | None:
        """Abort the flow whose arrival event is ``event``; returns the whole bytes it had sent.

        None (and nothing changes) if its last byte has already left: it will still arrive.
        Aborted flows never arrive; ``subscribe_aborted`` observers hear of them.
        """
        self._advance()
        flow = next((f for f in self._flows if f.done is event), None)
        if flow is None or flow.remaining_bytes <= _EPS_BYTES:
            return None
        self._flows.remove(flow)
        self._reschedule()
        sent = max(math.floor(flow.message.nbytes - flow.remaining_bytes + _EPS_BYTES), 0)
        for observer in self._abort_observers:
            observer(flow.message, flow.path, flow.t_send, self.env.now, sent)
        return sent

    # -- internals -------------------------------------------------------------------------
    def _advance(self) -> None:
        """Drain bytes sent since the last update at the current rates."""
        dt = self.env.now - self._last_update
        if dt > 0:
            for f in self._flows:
                f.remaining_bytes -= f.rate_Bps * dt if math.isfinite(f.rate_Bps) else f.remaining_bytes
        self._last_update = self.env.now

    def _reschedule(self) -> None:
        for f in [f for f in self._flows if f.remaining_bytes <= _EPS_BYTES]:
            self._finish(f)
        rates = max_min_rates(self._flows)
        for f in self._flows:
            f.rate_Bps = rates[f]
        for f in [f for f in self._flows if math.isinf(f.rate_Bps)]:
            self._finish(f)  # no finite link on the path: transmission takes no time
        if not self._flows:
            self._wakeup = None
            return
        delay = min(f.remaining_bytes / f.rate_Bps for f in self._flows)
        wakeup = self.env.timeout(max(delay, 0.0))
        self._wakeup = wakeup
        wakeup.callbacks.append(self._on_wakeup)

    def _on_wakeup(self, event: simpy.Event) -> None:
        if event is not self._wakeup:  # superseded by a later start, end or cancel
            return
        self._advance()
        t_next = min(f.remaining_bytes / f.rate_Bps for f in self._flows)
        for f in self._flows:
            if f.remaining_bytes / f.rate_Bps <= t_next + _EPS_S:
                f.remaining_bytes = 0.0  # ends now; absorbs float round-off
        self._reschedule()

    def _finish(self, flow: Flow) -> None:
        self._flows.remove(flow)
        latency = sum(l.latency_s for l in flow.path)
        self.env.process(self._propagate(flow, latency))

    def _propagate(self, flow: Flow, latency_s: float):
        if latency_s > 0:
            yield self.env.timeout(latency_s)
        t_arrive = self.env.now
        for observer in self._observers:
            observer(flow.message, flow.path, flow.t_send, t_arrive)
        flow.done.succeed(flow.message)
