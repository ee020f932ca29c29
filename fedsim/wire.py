"""Serialization of float32 vectors: the fp32 wire format shared by models and updates.

Format (little endian): magic ``b"FV"`` (2 bytes), dtype code (1 byte), reserved (1 byte),
element count (uint32, 4 bytes), then the raw elements. Header: :data:`HEADER_BYTES` = 8 bytes,
so a float32 vector of p values takes ``8 + 4 p`` bytes.
"""

from __future__ import annotations

import struct

import numpy as np
import torch

HEADER_BYTES = 8
_MAGIC = b"FV"
_DTYPES = {0: np.dtype("<f4"), 1: np.dtype("<f8")}
_CODES = {v: k for k, v in _DTYPES.items()}


def pack_vector(vec: torch.Tensor | np.ndarray, dtype: str = "<f4") -> bytes:
    """Serialize a 1-D vector to bytes (default float32)."""
    arr = vec.detach().cpu().numpy() if isinstance(vec, torch.Tensor) else np.asarray(vec)
    dt = np.dtype(dtype)
    arr = np.ascontiguousarray(arr.reshape(-1), dtype=dt)
    return _MAGIC + struct.pack("<BBI", _CODES[dt], 0, arr.size) + arr.tobytes()


def vector_numel(buf: bytes) -> int:
    """The element count of a :func:`pack_vector` payload (read from its header)."""
    if len(buf) < HEADER_BYTES or buf[:2] != _MAGIC:
        raise ValueError("not a fedsim vector payload")
    return struct.unpack_from("<BBI", buf, 2)[2]


def unpack_vector(buf: bytes) -> torch.Tensor:
    """Inverse of :func:`pack_vector`; returns a float32 (or float64) CPU tensor."""
    if len(buf) < HEADER_BYTES or buf[:2] != _MAGIC:
        raise ValueError("not a fedsim vector payload")
    code, _, n = struct.unpack_from("<BBI", buf, 2)
    dt = _DTYPES[code]
    if len(buf) != HEADER_BYTES + n * dt.itemsize:
        raise ValueError(f"vector payload has {len(buf)} bytes, expected {HEADER_BYTES + n * dt.itemsize}")
    arr = np.frombuffer(buf, dtype=dt, count=n, offset=HEADER_BYTES)
    return torch.from_numpy(arr.copy())
