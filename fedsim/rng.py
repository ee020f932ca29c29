"""Seeded random streams: every component derives its own stream from the run seed and its name.

A stream depends only on ``(run seed, component path)``, never on event order, so changing the
network (timing) never changes what is learned.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def _words(path: tuple[str | int, ...]) -> list[int]:
    return [p if isinstance(p, int) else zlib.crc32(p.encode()) for p in path]


def seed_for(root_seed: int, *path: str | int) -> int:
    """A 63-bit seed owned by the component named ``path`` (e.g. ``("client", 3, "round", 7)``)."""
    ss = np.random.SeedSequence([root_seed, *_words(path)])
    return int(ss.generate_state(2, dtype=np.uint32).astype(np.uint64) @ np.array([1 << 31, 1], dtype=np.uint64))


def numpy_rng(root_seed: int, *path: str | int) -> np.random.Generator:
    """A numpy Generator for the component named ``path``."""
    return np.random.default_rng(seed_for(root_seed, *path))


def torch_generator(root_seed: int, *path: str | int) -> torch.Generator:
    """A CPU torch Generator for the component named ``path``."""
    return torch.Generator().manual_seed(seed_for(root_seed, *path))
