"""Simple gradient defences applied to an observation before it is attacked (DLG §5)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def gaussian_noise(
    observed: Sequence[Tensor], variance: float, generator: torch.Generator
) -> tuple[Tensor, ...]:
    """Add i.i.d. Gaussian noise of the given ``variance`` to every observed entry."""
    if variance < 0:
        raise ValueError('"variance" must be >= 0.')
    std = variance**0.5
    return tuple(
        t + std * torch.randn(t.shape, generator=generator, dtype=t.dtype) for t in observed
    )


def prune_smallest(observed: Sequence[Tensor], fraction: float) -> tuple[Tensor, ...]:
    """Zero the ``fraction`` of entries with smallest magnitude in each tensor."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError('"fraction" must be in [0, 1].')
    out = []
    for t in observed:
        k = int(fraction * t.numel())
        if k == 0:
            out.append(t.clone())
            continue
        threshold = t.abs().flatten().kthvalue(k).values
        out.append(torch.where(t.abs() > threshold, t, torch.zeros_like(t)))
    return tuple(out)
