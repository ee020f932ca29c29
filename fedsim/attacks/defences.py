"""Gradient defences applied to an observation before it is attacked (DLG §5).

A defence is a callable ``(observed, seed) -> observed`` with a ``describe()`` for result rows,
so scheme-specific transforms (e.g. a QSGD round trip) plug in the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor


class Defence(Protocol):
    """Transforms the observed tensors; ``seed`` makes any randomness reproducible."""

    def __call__(self, observed: Sequence[Tensor], seed: int) -> tuple[Tensor, ...]: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class GaussianNoise:
    """Add i.i.d. Gaussian noise of the given ``variance`` to every observed entry."""

    variance: float

    def __post_init__(self) -> None:
        if self.variance < 0:
            raise ValueError('"variance" must be >= 0.')

    def __call__(self, observed: Sequence[Tensor], seed: int) -> tuple[Tensor, ...]:
        generator = torch.Generator().manual_seed(seed)
        std = self.variance**0.5
        return tuple(
            t + std * torch.randn(t.shape, generator=generator, dtype=t.dtype) for t in observed
        )

    def describe(self) -> dict[str, Any]:
        return {"defence": "gaussian_noise", "noise_variance": self.variance}


@dataclass(frozen=True)
class Pruning:
    """Zero the ``fraction`` of entries with smallest magnitude in each observed tensor."""

    fraction: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError('"fraction" must be in [0, 1].')

    def __call__(self, observed: Sequence[Tensor], seed: int) -> tuple[Tensor, ...]:
        out = []
        for t in observed:
            k = int(self.fraction * t.numel())
            if k == 0:
                out.append(t.clone())
                continue
            threshold = t.abs().flatten().kthvalue(k).values
            out.append(torch.where(t.abs() > threshold, t, torch.zeros_like(t)))
        return tuple(out)

    def describe(self) -> dict[str, Any]:
        return {"defence": "pruning", "prune_fraction": self.fraction}


def relative_error(defended: Sequence[Tensor], observed: Sequence[Tensor]) -> float:
    """``‖defended − observed‖ / ‖observed‖`` over all tensors together."""
    num = sum(float(((d - o) ** 2).sum()) for d, o in zip(defended, observed, strict=True))
    den = sum(float((o**2).sum()) for o in observed)
    return (num / den) ** 0.5
