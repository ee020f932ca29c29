"""Epsilon per round from Google's ``dp-accounting`` RDP accountant (never a hand formula)."""

from __future__ import annotations

from collections.abc import Sequence

#: Renyi orders the accountant optimises over. Integer orders only: fractional orders below 2
#: are slow for subsampled Gaussians and fail to converge at some (q, z); epsilon stays a valid
#: upper bound, a little looser at very large epsilon.
ORDERS: tuple[float, ...] = (*range(2, 65), 80, 96, 128, 192, 256, 512)


def epsilon_by_round(releases: Sequence[int], *, noise_multiplier: float, sampling_prob: float,
                     delta: float, orders: Sequence[float] = ORDERS) -> list[float]:
    """Cumulative epsilon at ``delta`` after each entry of ``releases``.

    ``releases[i]`` is how many Gaussian releases (noise multiplier z, Poisson-sampled with
    probability ``sampling_prob``; 1 for none) one individual has been exposed to by then.
    Neighbouring datasets differ by adding or removing one client. ``inf`` when z is 0.
    """
    import dp_accounting  # a heavy import (absl, dm-tree): only runs with privacy pay for it
    from dp_accounting.rdp import RdpAccountant

    cache: dict[int, float] = {0: 0.0}
    event: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sampling_prob < 1:
        event = dp_accounting.PoissonSampledDpEvent(sampling_prob, event)
    out = []
    for count in releases:
        if count not in cache:
            accountant = RdpAccountant(list(orders))
            accountant.compose(event, int(count))
            cache[count] = float(accountant.get_epsilon(delta))
        out.append(cache[count])
    return out
