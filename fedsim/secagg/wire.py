"""Wire formats of the secure-aggregation messages, and their sizes in bytes.

All integers are little-endian uint32; ``n1``: clients in the key list (Round 0 survivors),
``n2``: clients whose shares were routed (Round 1), ``n3``: clients whose masked input arrived
(Round 2), ``p``: model coordinates, ``k``: ring bits.

=================  ===================  ======================================================  =====================
kind               direction            layout                                                  bytes
=================  ===================  ======================================================  =====================
``sa_advertise``   client -> server     c_pk (32) | s_pk (32)                                   64
``sa_keys``        server -> client     n1 | t | n1 x (id | c_pk | s_pk)                        8 + 68 n1
``sa_shares``      client -> server     count | (n1 - 1) x (recipient id | sealed bundle)       4 + 76 (n1 - 1)
``sa_routed``      server -> client     count | (n2 - 1) x (sender id | sealed bundle)          4 + 76 (n2 - 1)
``masked_update``  client -> server     "SM" | k | f (1 each) | p + 1 | (p + 1) x k-bit        8 + (p + 1) k / 8
``sa_unmask``      server -> client     n3 | n3 x id                                            4 + 4 n3
``sa_reveal``      client -> server     n3 | n2 - n3 | n3 x (id | b share 16)                   8 + 20 n3 + 36 (n2 - n3)
                                        | (n2 - n3) x (id | s_sk share 32)
``sa_abort``       server -> client     ``b"ABRT"``                                             4
=================  ===================  ======================================================  =====================

A sealed bundle is AES-128-GCM over ``sender | recipient | s_sk share (32) | b share (16)``
(56 bytes) plus its 16-byte tag: 72 bytes. Its nonce is ``sender | recipient | round`` (not
sent: both ends know it).
"""

from __future__ import annotations

import struct

import numpy as np

from fedsim.secagg.primitives import KEY_BYTES, SEED_BYTES, TAG_BYTES

ADVERTISE_BYTES = 2 * KEY_BYTES
BUNDLE_PLAIN_BYTES = 8 + KEY_BYTES + SEED_BYTES
BUNDLE_BYTES = BUNDLE_PLAIN_BYTES + TAG_BYTES
ABORT = b"ABRT"
_MASKED_MAGIC = b"SM"
_U32 = struct.Struct("<I")


def keys_nbytes(n1: int) -> int:
    return 8 + (4 + ADVERTISE_BYTES) * n1


def shares_nbytes(n_peers: int) -> int:
    """``sa_shares`` (``n_peers = n1 - 1``) and ``sa_routed`` (``n_peers = n2 - 1``)."""
    return 4 + (4 + BUNDLE_BYTES) * n_peers


def masked_nbytes(numel: int, modulus_bits: int) -> int:
    return 8 + (numel + 1) * modulus_bits // 8


def unmask_nbytes(n3: int) -> int:
    return 4 + 4 * n3


def reveal_nbytes(n_survivors: int, n_dropped: int) -> int:
    return 8 + (4 + SEED_BYTES) * n_survivors + (4 + KEY_BYTES) * n_dropped


def pack_keys(threshold: int, entries: dict[int, bytes]) -> bytes:
    """``sa_keys``: the threshold and each client's two public keys (sorted ids)."""
    body = b"".join(_U32.pack(c) + entries[c] for c in sorted(entries))
    return struct.pack("<II", len(entries), threshold) + body


def unpack_keys(buf: bytes) -> tuple[int, dict[int, bytes]]:
    n, threshold = struct.unpack_from("<II", buf)
    step = 4 + ADVERTISE_BYTES
    return threshold, {_U32.unpack_from(buf, 8 + i * step)[0]:
                       buf[12 + i * step:8 + (i + 1) * step] for i in range(n)}


def pack_bundles(bundles: dict[int, bytes]) -> bytes:
    """``sa_shares``/``sa_routed``: sealed bundles keyed by the peer's id (sorted)."""
    return _U32.pack(len(bundles)) + b"".join(_U32.pack(c) + bundles[c] for c in sorted(bundles))


def unpack_bundles(buf: bytes) -> dict[int, bytes]:
    (n,) = _U32.unpack_from(buf)
    step = 4 + BUNDLE_BYTES
    return {_U32.unpack_from(buf, 4 + i * step)[0]: buf[8 + i * step:4 + (i + 1) * step]
            for i in range(n)}


def pack_masked(elements: np.ndarray, modulus_bits: int, fraction_bits: int) -> bytes:
    return (_MASKED_MAGIC + struct.pack("<BBI", modulus_bits, fraction_bits, elements.size)
            + elements.tobytes())


def unpack_masked(buf: bytes, dtype: np.dtype) -> np.ndarray:
    if buf[:2] != _MASKED_MAGIC:
        raise ValueError("not a masked secure-aggregation input")
    _, _, n = struct.unpack_from("<BBI", buf, 2)
    return np.frombuffer(buf, dtype=dtype, count=n, offset=8)


def pack_ids(ids: list[int]) -> bytes:
    """``sa_unmask``: the clients whose masked input the server holds."""
    return _U32.pack(len(ids)) + b"".join(_U32.pack(c) for c in sorted(ids))


def unpack_ids(buf: bytes) -> list[int]:
    (n,) = _U32.unpack_from(buf)
    return [_U32.unpack_from(buf, 4 + 4 * i)[0] for i in range(n)]


def pack_reveal(b_shares: dict[int, bytes], sk_shares: dict[int, bytes]) -> bytes:
    """``sa_reveal``: shares of survivors' mask seeds and of dropped clients' mask keys."""
    return (struct.pack("<II", len(b_shares), len(sk_shares))
            + b"".join(_U32.pack(c) + b_shares[c] for c in sorted(b_shares))
            + b"".join(_U32.pack(c) + sk_shares[c] for c in sorted(sk_shares)))


def unpack_reveal(buf: bytes) -> tuple[dict[int, bytes], dict[int, bytes]]:
    nb, ns = struct.unpack_from("<II", buf)
    b_step, s_step = 4 + SEED_BYTES, 4 + KEY_BYTES
    b = {_U32.unpack_from(buf, 8 + i * b_step)[0]: buf[12 + i * b_step:8 + (i + 1) * b_step]
         for i in range(nb)}
    off = 8 + nb * b_step
    s = {_U32.unpack_from(buf, off + i * s_step)[0]: buf[off + 4 + i * s_step:off + (i + 1) * s_step]
         for i in range(ns)}
    return b, s
