"""The published structure of a lowered KeyNet model: which wire entries form which matrix.

KeyNet deploys the encrypted model as sparse matrices, so their sparsity pattern is public by
design; it depends on the keys, so it is sent (``keynet_layout``, key agent -> server, once at
set-up, counted in ``bytes_keys``) rather than assumed known. Wire format (little endian)::

    b"KL", u8 version (1), u8 0, u32 n_layers, u64 numel
    per layer: u32 rows, u32 cols, u64 start, u64 nnz,
               (rows + 1) x u32 CSR row pointers, nnz x u32 column indices

so a payload takes ``16 + sum(24 + 4 (rows + 1) + 4 nnz)`` bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from fedsim.keynet.domain import KeyNetDomain

_HEAD = struct.Struct("<2sBBIQ")
_LAYER = struct.Struct("<IIQQ")


@dataclass(frozen=True)
class LayerPattern:
    """One encrypted layer's CSR pattern inside the wire vector."""

    shape: tuple[int, int]
    start: int
    indptr: np.ndarray  # int64, rows + 1
    indices: np.ndarray  # int64, nnz


def layout_bytes(domain: KeyNetDomain) -> bytes | None:
    """The layout message of a lowered, chained ``KeyNetDomain`` (None for other networks)."""
    if domain.space != "lowered" or not domain.plan.chained:
        return None
    segs = [s for s in domain.segments if s.kind == "layer"]
    parts = [_HEAD.pack(b"KL", 1, 0, len(segs), int(domain.numel))]
    for s in segs:
        parts.append(_LAYER.pack(s.shape[0], s.shape[1], s.start, len(s.indices)))
        parts.append(np.asarray(s.indptr, dtype="<u4").tobytes())
        parts.append(np.asarray(s.indices, dtype="<u4").tobytes())
    return b"".join(parts)


def parse_layout(payload: bytes) -> tuple[list[LayerPattern], int]:
    """Inverse of :func:`layout_bytes`: the layer patterns and the wire length."""
    magic, version, _, n_layers, numel = _HEAD.unpack_from(payload, 0)
    if magic != b"KL" or version != 1:
        raise ValueError("not a KeyNet layout message")
    pos, layers = _HEAD.size, []
    for _ in range(n_layers):
        rows, cols, start, nnz = _LAYER.unpack_from(payload, pos)
        pos += _LAYER.size
        indptr = np.frombuffer(payload, "<u4", rows + 1, pos).astype(np.int64)
        pos += 4 * (rows + 1)
        indices = np.frombuffer(payload, "<u4", nnz, pos).astype(np.int64)
        pos += 4 * nnz
        layers.append(LayerPattern((rows, cols), start, indptr, indices))
    if pos != len(payload):
        raise ValueError(f"KeyNet layout message has {len(payload) - pos} trailing bytes")
    return layers, int(numel)
