"""Per-client draws of device speed and link parameters from the scenario's distributions
(named device profiles: :data:`fedsim.config.DEVICE_PROFILES`)."""

from __future__ import annotations

import numpy as np

from fedsim.config import (
    DEVICE_PROFILES,
    LOGNORMAL_CLIP_SIGMAS,
    Choice,
    Fixed,
    LogNormal,
    Uniform,
)


def draw(spec: float | Fixed | Uniform | LogNormal | Choice, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` values (one per client) from a number or a distribution config."""
    if isinstance(spec, (int, float)):
        return np.full(n, float(spec))
    if isinstance(spec, Fixed):
        return np.full(n, spec.value)
    if isinstance(spec, Uniform):
        return rng.uniform(spec.low, spec.high, n)
    if isinstance(spec, LogNormal):
        z = np.clip(rng.standard_normal(n), -LOGNORMAL_CLIP_SIGMAS, LOGNORMAL_CLIP_SIGMAS)
        return spec.median * np.exp(spec.sigma * z)
    if isinstance(spec, Choice):
        return rng.choice(np.asarray(spec.values, dtype=float), n)
    raise TypeError(f"not a distribution: {spec!r}")


def device_speeds(device: str | None, flops_per_s, n: int, rng: np.random.Generator) -> np.ndarray:
    """FLOP/s of each of ``n`` clients, from a named profile or a distribution."""
    if device is not None:
        if device not in DEVICE_PROFILES:
            raise ValueError(f"unknown device profile {device!r}; known: {', '.join(DEVICE_PROFILES)}")
        return np.full(n, DEVICE_PROFILES[device])
    return draw(flops_per_s, n, rng)
