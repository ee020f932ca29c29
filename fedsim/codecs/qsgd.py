"""QSGD stochastic quantization (Alistarh et al. 2017) with fixed-width packing, as in FedPAQ.

Quantizer
---------
The update v (p float32 coordinates) is split into buckets of d consecutive coordinates (the last
one may be shorter). Each bucket b has a scale ``n_b`` = its L2 norm (``norm="l2"``, the paper's
choice) or its max-norm (``norm="max"``), rounded to float32. Coordinate i of bucket b becomes
``sign(v_i) * l_i * n_b / s`` where, with ``r_i = |v_i| * s / n_b``, the level ``l_i`` is
``floor(r_i) + 1`` with probability ``r_i - floor(r_i)`` and ``floor(r_i)`` otherwise, so
``E[Q_s(v)] = v`` (up to float rounding). A zero bucket gives all-zero levels, so Q_s(0) = 0.
For L2 scaling, ``E||Q_s(v) - v||^2 <= min(d/s^2, sqrt(d)/s) * sum_b ||v_b||^2``.
The rounding draws come from a counter-based splitmix64 stream keyed by ``seed`` (see
:mod:`.qsgd_kernels`): the payload bytes depend only on (update, seed modulo 2**64, s, d, norm).

Wire format (little endian)
---------------------------
==========  ===========  ====================================================================
offset      bytes        field
==========  ===========  ====================================================================
0           2            magic ``b"QS"``
2           1            format version (1)
3           1            norm kind: 0 = L2, 1 = max
4           4            s, number of levels (uint32)
8           4            d, bucket size in coordinates (uint32)
12          4            p, number of coordinates (uint32)
16          4*nb         the nb = ceil(p/d) bucket norms (float32)
16 + 4*nb   ceil(p*b/8)  p codes of b = ceil(log2(2s+1)) bits each: level magnitude in the low
                         b-1 bits, sign in the top bit (bit order: :mod:`.qsgd_kernels`)
==========  ===========  ====================================================================

A NaN norm marks a bucket of a non-finite (diverged) update; its codes are 0 and it decodes to
NaN, so the server sees the divergence. So a payload takes exactly ``HEADER_BYTES + 4*ceil(p/d) + ceil(p*b/8)`` bytes
(:func:`payload_nbytes`).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field

from fedsim.codecs import qsgd_kernels as kern
from fedsim.codecs.base import CodecContext, EncodedUpdate, UpdateCodec
from fedsim.config import CodecSettings, Int
from fedsim.config.registry import CODECS

#: Size of the fixed header in bytes.
HEADER_BYTES = 16
#: Largest supported number of levels (codes must fit 32 bits; float64 rounding stays exact).
MAX_LEVELS = 2**24
_MAGIC = b"QS"
_VERSION = 1
_HEADER = struct.Struct("<2sBBIII")
_NORM_CODES: dict[str, int] = {"l2": 0, "max": 1}
_NORM_NAMES = {v: k for k, v in _NORM_CODES.items()}
_STATUS_MESSAGES = {
    kern.BAD_LEVEL: "a level magnitude exceeds s",
    kern.NEGATIVE_ZERO: "a code has the sign bit set on level 0",
    kern.BAD_PADDING: "the padding bits of the last byte are not zero",
}
_SEED_MASK = 2**64 - 1

NormKind = Literal["l2", "max"]


class QsgdCodecConfig(CodecSettings):
    """``codec: {kind: qsgd, levels: s}``: QSGD with ``levels`` levels per sign, buckets of
    ``bucket_size`` coordinates scaled by their ``norm``."""

    kind: Literal["qsgd"]
    levels: Annotated[Int, Field(ge=1, le=MAX_LEVELS)]
    bucket_size: Annotated[Int, Field(ge=1, lt=2**32)] = 512
    norm: NormKind = "l2"


def bits_per_code(levels: int) -> int:
    """Bits per coordinate, ``ceil(log2(2s+1))`` = ``1 + ceil(log2(s+1))`` (sign + level)."""
    return (2 * levels).bit_length()


def payload_nbytes(numel: int, levels: int, bucket_size: int) -> int:
    """Exact payload size in bytes: ``16 + 4*ceil(p/d) + ceil(p*b/8)``."""
    return HEADER_BYTES + 4 * -(-numel // bucket_size) + -(-numel * bits_per_code(levels) // 8)


@dataclass(frozen=True)
class Quantized:
    """The content of a QSGD payload: configuration, float32 bucket norms and signed levels."""

    levels: int
    bucket_size: int
    norm: NormKind
    norms: np.ndarray  #: float32, one per bucket
    signed_levels: np.ndarray  #: int32 in [-levels, levels], one per coordinate


def pack(q: Quantized) -> bytes:
    """Serialize ``q`` in the wire format above (the encoder's fused kernel writes the same)."""
    p = q.signed_levels.size
    buf = _new_payload(p, q.levels, q.bucket_size, q.norm)
    nb = -(-p // q.bucket_size)
    if q.norms.size != nb:
        raise ValueError(f"{q.norms.size} norms given for {nb} buckets")
    if np.abs(q.signed_levels).max(initial=0) > q.levels:
        raise ValueError(f"a level exceeds s={q.levels}")
    buf[HEADER_BYTES:HEADER_BYTES + 4 * nb] = np.asarray(q.norms, "<f4").view(np.uint8)
    levels = np.ascontiguousarray(q.signed_levels, dtype=np.int32)
    kern.pack_levels(levels, bits_per_code(q.levels), buf[HEADER_BYTES + 4 * nb:])
    return buf.tobytes()


def unpack(payload: bytes) -> Quantized:
    """Parse and validate a payload; raises ``ValueError`` if it is malformed."""
    levels, d, norm, p = _parse_header(payload)
    norms, codes = _split(payload, levels, d, p)
    signed = np.empty(p, dtype=np.int32)
    _check_status(kern.unpack_levels(codes, levels, bits_per_code(levels), signed))
    return Quantized(levels, d, norm, norms, signed)


class QsgdCodec(UpdateCodec):
    """QSGD quantizer Q_s with per-bucket scaling; payload size given by :meth:`payload_nbytes`.

    Parameters
    ----------
    levels
        s, the number of nonzero quantization levels (1 <= s <= 2**24); b = ceil(log2(2s+1))
        bits per coordinate.
    bucket_size
        d, coordinates per bucket; each bucket adds one float32 norm (32 bits).
    norm
        Bucket scale: ``"l2"`` (QSGD paper) or ``"max"`` (max |v_i|; lower variance, still
        unbiased, but without the L2 variance bound).
    """

    name = "qsgd"

    def __init__(self, levels: int, bucket_size: int = 512, norm: NormKind = "l2") -> None:
        if not 1 <= int(levels) <= MAX_LEVELS:
            raise ValueError(f"levels must be in [1, {MAX_LEVELS}], got {levels}")
        if not 1 <= int(bucket_size) < 2**32:
            raise ValueError(f"bucket_size must be in [1, 2**32), got {bucket_size}")
        if norm not in _NORM_CODES:
            raise ValueError(f"norm must be 'l2' or 'max', got {norm!r}")
        self.levels = int(levels)
        self.bucket_size = int(bucket_size)
        self.norm: NormKind = norm
        self.bits = bits_per_code(self.levels)

    def __repr__(self) -> str:
        return f"QsgdCodec(levels={self.levels}, bucket_size={self.bucket_size}, norm={self.norm!r})"

    def payload_nbytes(self, numel: int) -> int:
        """Exact payload size in bytes for ``numel`` coordinates (see :func:`payload_nbytes`)."""
        return payload_nbytes(numel, self.levels, self.bucket_size)

    def encoded_nbytes(self, numel: int, rnd: int) -> int:
        return self.payload_nbytes(numel)

    def encode(self, update: torch.Tensor, *, seed: int, slot: int, rnd: int = 0) -> EncodedUpdate:
        """Quantize and pack; metrics ``bits_per_coord`` (measured) and ``rel_error``."""
        v = _as_float32_vector(update)
        p = v.size
        buf = _new_payload(p, self.levels, self.bucket_size, self.norm)
        nb = -(-p // self.bucket_size)
        norms = buf[HEADER_BYTES:HEADER_BYTES + 4 * nb].view(np.float32)
        finite = bool(np.isfinite(v).all())
        if finite:
            err2, tot2 = kern.quantize_pack(v, self.levels, self.bucket_size, self.norm == "max",
                                            self.bits, np.uint64(int(seed) & _SEED_MASK), norms,
                                            buf[HEADER_BYTES + 4 * nb:])
        if not (finite and math.isfinite(tot2) and np.isfinite(norms).all()):
            norms[:] = np.nan  # a diverged update (or a norm beyond float32): decodes to NaN
            buf[HEADER_BYTES + 4 * nb:] = 0
            return EncodedUpdate(buf.tobytes(), {"bits_per_coord": 8 * len(buf) / p,
                                                 "rel_error": math.nan})
        payload = buf.tobytes()
        rel_error = math.sqrt(err2 / tot2) if tot2 > 0 else 0.0
        return EncodedUpdate(payload, {"bits_per_coord": 8 * len(payload) / p, "rel_error": rel_error})

    def decode(self, payload: bytes, *, numel: int) -> torch.Tensor:
        """Dequantize one payload to a float32 vector of ``numel`` coordinates."""
        out = np.zeros(numel, dtype=np.float32)
        self._add(payload, 1.0, out)
        return torch.from_numpy(out)

    def aggregate(self, payloads: Sequence[bytes], weights: Sequence[float], slots: Sequence[int],
                  *, numel: int) -> torch.Tensor:
        """``sum_i w_i * decode(payload_i)``, accumulated in float64, returned as float32."""
        if len(payloads) != len(weights):
            raise ValueError(f"{len(payloads)} payloads but {len(weights)} weights")
        total = np.zeros(numel, dtype=np.float64)
        for payload, w in zip(payloads, weights, strict=True):
            self._add(payload, float(w), total)
        return torch.from_numpy(total.astype(np.float32))

    def _add(self, payload: bytes, weight: float, out: np.ndarray) -> None:
        levels, d, _, p = _parse_header(payload)
        if (levels, d) != (self.levels, self.bucket_size):
            raise ValueError(f"QSGD payload has s={levels}, d={d}; codec expects "
                             f"s={self.levels}, d={self.bucket_size}")
        if p != out.size:
            raise ValueError(f"QSGD payload has {p} coordinates, expected {out.size}")
        norms, codes = _split(payload, levels, d, p)
        _check_status(kern.dequantize_add(codes, norms, levels, d, p, self.bits, weight, out))


def _as_float32_vector(update: torch.Tensor) -> np.ndarray:
    if update.dim() != 1:
        raise ValueError(f"QSGD encodes 1-D updates, got shape {tuple(update.shape)}")
    if not 1 <= update.numel() < 2**32:
        raise ValueError(f"QSGD needs 1 <= numel < 2**32, got {update.numel()}")
    return update.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()


def _new_payload(p: int, levels: int, d: int, norm: NormKind) -> np.ndarray:
    buf = np.empty(payload_nbytes(p, levels, d), dtype=np.uint8)
    buf[:HEADER_BYTES] = np.frombuffer(
        _HEADER.pack(_MAGIC, _VERSION, _NORM_CODES[norm], levels, d, p), dtype=np.uint8)
    return buf


def _parse_header(payload: bytes) -> tuple[int, int, NormKind, int]:
    if len(payload) < HEADER_BYTES:
        raise ValueError(f"QSGD payload too short: {len(payload)} bytes, header needs {HEADER_BYTES}")
    magic, version, norm_code, levels, d, p = _HEADER.unpack_from(payload)
    if magic != _MAGIC:
        raise ValueError(f"not a QSGD payload (magic {magic!r}, expected {_MAGIC!r})")
    if version != _VERSION:
        raise ValueError(f"unsupported QSGD payload version {version}")
    if norm_code not in _NORM_NAMES:
        raise ValueError(f"QSGD payload has unknown norm kind {norm_code}")
    if not 1 <= levels <= MAX_LEVELS or d < 1 or p < 1:
        raise ValueError(f"QSGD payload header is invalid: s={levels}, d={d}, p={p}")
    expected = payload_nbytes(p, levels, d)
    if len(payload) != expected:
        raise ValueError(f"QSGD payload has {len(payload)} bytes, expected {expected} "
                         f"for p={p}, s={levels}, d={d} (truncated or corrupt)")
    return levels, d, _NORM_NAMES[norm_code], p


def _split(payload: bytes, levels: int, d: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    """The float32 norms (copied, aligned) and the packed code bytes (a read-only view)."""
    nb = -(-p // d)
    norms = np.frombuffer(payload, dtype="<f4", count=nb, offset=HEADER_BYTES).astype(np.float32)
    if (np.isinf(norms) | (norms < 0)).any():
        raise ValueError("QSGD payload has a negative or infinite bucket norm")
    codes = np.frombuffer(payload, dtype=np.uint8, offset=HEADER_BYTES + 4 * nb)
    return norms, codes


def _check_status(status: int) -> None:
    if status != kern.OK:
        raise ValueError(f"corrupt QSGD payload: {_STATUS_MESSAGES[status]}")


def _make(cfg: QsgdCodecConfig, ctx: CodecContext) -> QsgdCodec:
    return QsgdCodec(levels=cfg.levels, bucket_size=cfg.bucket_size, norm=cfg.norm)


CODECS.register(QsgdCodecConfig, _make)
