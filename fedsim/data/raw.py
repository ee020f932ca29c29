"""The decoded-but-unnormalized form every loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RawData:
    """uint8 images (N, C, H, W) in 0..255 and integer labels (N,), as decoded from the source."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    source: str

    def __post_init__(self) -> None:
        """Validate what a decoder produced against the source's promises (one-line DataError)."""
        from fedsim.data.base import DataError

        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.ndim != 4 or x.dtype != np.uint8 or y.ndim != 1 or not len(y):
                raise DataError(f"{self.source}: {split} split has images of shape {x.shape} "
                                f"({x.dtype}) and labels of shape {y.shape}; expected (N, C, H, W) "
                                "uint8 and (N,) with N > 0")
            if len(x) != len(y):
                raise DataError(f"{self.source}: {split} split has {len(x)} images but "
                                f"{len(y)} labels")
            if y.min() < 0 or y.max() >= self.num_classes:
                raise DataError(f"{self.source}: {split} labels must be in 0..{self.num_classes - 1}"
                                f", found {int(y.min())}..{int(y.max())}")
