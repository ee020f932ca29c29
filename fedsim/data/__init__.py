"""Datasets and client partitions (layer 1: pure numpy / PyTorch).

Public API: :class:`Dataset`, :class:`DataError`, :func:`load_dataset`, :func:`resolve_data_root`,
:func:`resolve_cache_dir`, :func:`partition`, :func:`class_histogram`.
"""

from __future__ import annotations

from fedsim.data.base import DataError, Dataset
from fedsim.data.loading import DATASET_NAMES, load_dataset, resolve_cache_dir, resolve_data_root
from fedsim.data.partition import PARTITION_KINDS, class_histogram, partition

__all__ = [
    "DATASET_NAMES",
    "PARTITION_KINDS",
    "DataError",
    "Dataset",
    "class_histogram",
    "load_dataset",
    "partition",
    "resolve_cache_dir",
    "resolve_data_root",
]
