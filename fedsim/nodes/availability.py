"""Client availability and dropout: seeded per (client, round), independent of timing."""

from __future__ import annotations

from fedsim.rng import numpy_rng


class Availability:
    """Decides whether a client has checked in for a round, and whether it drops out during it.

    Each decision is drawn from a stream owned by ``(seed, "availability", client, round)``, so it
    is the same whatever the network does.
    """

    def __init__(self, seed: int, p_unavailable: float, p_dropout: float):
        self.seed, self.p_unavailable, self.p_dropout = seed, p_unavailable, p_dropout

    def _draws(self, cid: int, rnd: int) -> tuple[float, float]:
        u = numpy_rng(self.seed, "availability", cid, rnd).random(2)
        return float(u[0]), float(u[1])

    def available(self, cid: int, rnd: int) -> bool:
        """Whether client ``cid`` is online and eligible for selection in round ``rnd``."""
        return self.p_unavailable == 0 or self._draws(cid, rnd)[0] >= self.p_unavailable

    def drops_out(self, cid: int, rnd: int) -> bool:
        """Whether client ``cid`` loses its connection after training in round ``rnd``."""
        return self.p_dropout > 0 and self._draws(cid, rnd)[1] < self.p_dropout
