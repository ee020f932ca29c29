"""Numba kernels behind :mod:`fedsim.codecs.qsgd`: fused quantize+pack, unpack+dequantize.

Bit stream: code ``i`` (``bits`` wide) occupies stream bits ``[i*bits, (i+1)*bits)``, and stream
bit ``k`` is bit ``k % 8`` (LSB first) of byte ``k // 8``. The last byte is zero-padded, so ``n``
codes take exactly ``ceil(n*bits/8)`` bytes. A code holds the level magnitude in its low
``bits - 1`` bits and the sign (1 = negative) in its top bit; level 0 always has sign 0.

Randomness: coordinate ``i`` draws ``u_i = splitmix64(key + (i+1)*GOLDEN) >> 11`` scaled to
[0, 1) (53 bits), with ``key = splitmix64(seed)``. The draw depends only on ``(seed, i)``
(counter based), so a payload is reproducible from the seed alone.

All kernels run single threaded and need ``bits <= 32``.
"""

from __future__ import annotations

import numba
import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_U8 = np.uint64(0xFF)
_TO_UNIT = 2.0**-53

#: Status codes returned by the unpacking kernels.
OK, BAD_LEVEL, NEGATIVE_ZERO, BAD_PADDING = 0, 1, 2, 3


@numba.njit(inline="always")
def _mix64(z):
    """The splitmix64 finalizer (a bijection on uint64 with full avalanche)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@numba.njit(inline="always")
def _put(out, pos, acc, nbits, code, bits):
    """Append ``code`` to the bit accumulator; flush 4 bytes once 32 bits are pending."""
    acc |= code << np.uint64(nbits)
    nbits += bits
    if nbits >= 32:
        for k in range(4):
            out[pos + k] = np.uint8((acc >> np.uint64(8 * k)) & _U8)
        pos += 4
        acc >>= np.uint64(32)
        nbits -= 32
    return pos, acc, nbits


@numba.njit(inline="always")
def _flush(out, pos, acc, nbits):
    """Write the pending bits (zero-padded to whole bytes)."""
    while nbits > 0:
        out[pos] = np.uint8(acc & _U8)
        pos += 1
        acc >>= np.uint64(8)
        nbits -= 8


@numba.njit(inline="always")
def _get(buf, pos, acc, nbits, bits, mask):
    """Take the next ``bits``-wide code from the stream."""
    while nbits < bits:
        acc |= np.uint64(buf[pos]) << np.uint64(nbits)
        pos += 1
        nbits += 8
    code = acc & mask
    acc >>= np.uint64(bits)
    nbits -= bits
    return code, pos, acc, nbits


@numba.njit(inline="always")
def _status(bad_level, neg_zero, padding):
    if bad_level:
        return BAD_LEVEL
    if neg_zero:
        return NEGATIVE_ZERO
    return BAD_PADDING if padding != 0 else OK


@numba.njit(cache=True, nogil=True)
def quantize_pack(v, s, d, use_max, bits, seed, norms, out):
    """Quantize float32 ``v`` with s levels per bucket of d and pack it, in one pass per bucket.

    Writes one float32 norm per bucket into ``norms`` and ``ceil(v.size*bits/8)`` bytes into
    ``out``. Returns ``(sum of squared errors, sum of squares of v)`` in float64, both over the
    dequantized float32 values the decoder reproduces.
    """
    p = v.size
    bits_of_v = v.view(np.uint32)
    sign_shift = np.uint64(bits - 1)
    key = _mix64(np.uint64(seed))
    pos, acc, nbits = 0, np.uint64(0), 0
    err2, tot2 = 0.0, 0.0
    for b in range(norms.size):
        lo = b * d
        hi = min(lo + d, p)
        sq, mx = 0.0, 0.0
        for i in range(lo, hi):
            x = np.float64(v[i])
            sq += x * x
            mx = max(mx, abs(x))
        tot2 += sq
        n32 = np.float32(mx if use_max else np.sqrt(sq))
        norms[b] = n32
        step = np.float64(n32) / s
        scale = s / np.float64(n32) if n32 > 0 else 0.0
        for i in range(lo, hi):
            x = np.float64(v[i])
            r = abs(x) * scale
            lev = np.int64(r)
            u = np.float64(_mix64(key + np.uint64(i + 1) * _GOLDEN) >> np.uint64(11)) * _TO_UNIT
            lev = min(lev + np.int64(u < r - lev), s)
            # Branch-free sign: the float's sign bit, dropped on level 0 (|Q| - |x| gives the error).
            neg = np.uint64(bits_of_v[i] >> np.uint32(31)) & np.uint64(lev != 0)
            code = np.uint64(lev) | (neg << sign_shift)
            e = np.float64(np.float32(lev * step)) - abs(x)
            err2 += e * e
            pos, acc, nbits = _put(out, pos, acc, nbits, code, bits)
    _flush(out, pos, acc, nbits)
    return err2, tot2


@numba.njit(cache=True, nogil=True)
def dequantize_add(buf, norms, s, d, p, bits, weight, out):
    """``out += weight * dequantize(buf)`` for p packed codes; returns a status code.

    Each value is first rounded to float32 (exactly what a single decode yields), then scaled.
    """
    mask = (np.uint64(1) << np.uint64(bits)) - np.uint64(1)
    level_mask = mask >> np.uint64(1)
    sign_shift = np.uint64(bits - 1)
    pos, acc, nbits = 0, np.uint64(0), 0
    bad_level, neg_zero = False, False
    for b in range(norms.size):
        lo = b * d
        hi = min(lo + d, p)
        step = np.float64(norms[b]) / s
        for i in range(lo, hi):
            code, pos, acc, nbits = _get(buf, pos, acc, nbits, bits, mask)
            lev = np.int64(code & level_mask)
            neg = (code >> sign_shift) != 0
            bad_level |= lev > s
            neg_zero |= neg & (lev == 0)
            q = np.float64(np.float32(lev * step))
            out[i] += weight * (1.0 - 2.0 * np.float64(neg)) * q
    return _status(bad_level, neg_zero, acc)


@numba.njit(cache=True, nogil=True)
def pack_levels(levels, bits, out):
    """Pack signed int32 levels (sign + magnitude codes) into ``ceil(n*bits/8)`` bytes."""
    sign_bit = np.uint64(1) << np.uint64(bits - 1)
    pos, acc, nbits = 0, np.uint64(0), 0
    for i in range(levels.size):
        lev = levels[i]
        code = np.uint64(-lev) | sign_bit if lev < 0 else np.uint64(lev)
        pos, acc, nbits = _put(out, pos, acc, nbits, code, bits)
    _flush(out, pos, acc, nbits)


@numba.njit(cache=True, nogil=True)
def unpack_levels(buf, s, bits, levels):
    """Inverse of :func:`pack_levels` into ``levels`` (int32); returns a status code."""
    mask = (np.uint64(1) << np.uint64(bits)) - np.uint64(1)
    level_mask = mask >> np.uint64(1)
    sign_shift = np.uint64(bits - 1)
    pos, acc, nbits = 0, np.uint64(0), 0
    bad_level, neg_zero = False, False
    for i in range(levels.size):
        code, pos, acc, nbits = _get(buf, pos, acc, nbits, bits, mask)
        lev = np.int64(code & level_mask)
        neg = (code >> sign_shift) != 0
        bad_level |= lev > s
        neg_zero |= neg & (lev == 0)
        levels[i] = -lev if neg else lev
    return _status(bad_level, neg_zero, acc)
