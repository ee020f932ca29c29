"""Client availability and dropout: seeded per (client, round) draws, and online sessions over
simulated time (a trace file or a generated diurnal pattern, :mod:`fedsim.nodes.traces`)."""

from __future__ import annotations

import math
from collections.abc import Callable

from fedsim.config import AvailabilityConfig
from fedsim.nodes.traces import OnlineTrace, diurnal, load_trace
from fedsim.rng import numpy_rng


class Availability:
    """Decides whether a client has checked in for a round, and whether it drops out during it.

    Each random decision is drawn from a stream owned by ``(seed, "availability", client,
    round)``, so it is the same whatever the network does. With an online ``trace``, a client
    is also available only while one of its sessions holds the current simulated time
    (``clock()``), and :meth:`online_until` tells a client when it will go offline.
    """

    def __init__(self, seed: int, p_unavailable: float, p_dropout: float,
                 trace: OnlineTrace | None = None, clock: Callable[[], float] | None = None):
        if trace is not None and clock is None:
            raise ValueError("an online trace needs the simulation clock")
        self.seed, self.p_unavailable, self.p_dropout = seed, p_unavailable, p_dropout
        self.trace, self._clock = trace, clock

    def _draws(self, cid: int, rnd: int) -> tuple[float, float]:
        u = numpy_rng(self.seed, "availability", cid, rnd).random(2)
        return float(u[0]), float(u[1])

    def available(self, cid: int, rnd: int) -> bool:
        """Whether client ``cid`` is online and eligible for selection in round ``rnd`` (now)."""
        if self.trace is not None and self.online_until(cid) <= self._clock():
            return False
        return self.p_unavailable == 0 or self._draws(cid, rnd)[0] >= self.p_unavailable

    def drops_out(self, cid: int, rnd: int) -> bool:
        """Whether client ``cid`` loses its connection after training in round ``rnd``."""
        return self.p_dropout > 0 and self._draws(cid, rnd)[1] < self.p_dropout

    def online_until(self, cid: int) -> float:
        """Simulated time (s) at which client ``cid`` goes offline: now if it is offline, ``inf``
        without a trace."""
        if self.trace is None:
            return math.inf
        return self.trace.online_until(cid, self._clock())


def make_availability(cfg: AvailabilityConfig, seed: int, num_clients: int,
                      clock: Callable[[], float]) -> Availability:
    """The run's availability: random draws, plus a trace file or a diurnal pattern if set."""
    trace = None
    if cfg.trace is not None:
        trace = load_trace(cfg.trace, num_clients)
    elif cfg.diurnal is not None:
        trace = diurnal(num_clients, cfg.diurnal.period_s, cfg.diurnal.online_fraction,
                        numpy_rng(seed, "availability", "diurnal"))
    return Availability(seed, cfg.p_unavailable, cfg.p_dropout, trace, clock)
