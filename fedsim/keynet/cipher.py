"""Encryption as a fixed sparse linear map on the flat parameter vector.

For fixed keys, every ciphertext entry is a fixed linear combination of parameters plus a
constant (pooling entries, the homogeneous 1). So a whole model encrypts as
``wire = E @ theta + offset`` and decrypts as ``theta = D @ wire``, with ``E``, ``offset`` and
``D`` precomputed once per key set from key-derived index maps. The wire layout (the positions
of ``Ŵ``'s structural nonzeros, row major per layer) depends only on the keys and the
architecture, never on values: exact zeros keep their slots, and every client holding the same
keys produces the same layout, so the server may average ciphertexts elementwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from fedsim.keynet.keys import Key, KeySet
from fedsim.keynet.plan import NetworkPlan


@dataclass(frozen=True)
class Segment:
    """A contiguous slice ``[start, stop)`` of the wire vector.

    ``kind`` is ``"layer"`` (one lowered ``Ŵ``; ``indptr``/``indices``/``shape`` give its CSR
    pattern), ``"tensor"`` (one channel-keyed state entry) or ``"rest"`` (vector-keyed values).
    ``plain`` is the number of plaintext parameters this segment carries.
    """

    name: str
    kind: str
    start: int
    stop: int
    plain: int
    shape: tuple[int, int] | None = None
    indptr: np.ndarray | None = None
    indices: np.ndarray | None = None

    @property
    def nnz(self) -> int:
        """Number of ciphertext values."""
        return self.stop - self.start


@dataclass(frozen=True, eq=False)
class LinearCipher:
    """``wire = enc @ theta + offset`` and ``theta = dec @ wire`` (float64, scipy CSR)."""

    enc: sp.csr_matrix
    offset: np.ndarray
    dec: sp.csr_matrix
    segments: tuple[Segment, ...]

    def encrypt(self, theta: np.ndarray) -> np.ndarray:
        """Ciphertext vector for the flat parameter vector ``theta``."""
        return self.enc @ theta + self.offset

    def decrypt(self, wire: np.ndarray) -> np.ndarray:
        """Flat parameter vector for the ciphertext ``wire``."""
        return self.dec @ wire


def _gather(mat: sp.csr_matrix | sp.csc_matrix, keys: np.ndarray):
    """All stored entries of the rows (CSR) / columns (CSC) ``keys``: (owner, index, value)."""
    ptr = mat.indptr.astype(np.int64)
    counts = ptr[keys + 1] - ptr[keys]
    owner = np.repeat(np.arange(keys.size), counts)
    first = np.cumsum(counts) - counts
    pos = np.repeat(ptr[keys] - first, counts) + np.arange(int(counts.sum()))
    return owner, mat.indices[pos].astype(np.int64), mat.data[pos]


def sandwich(rows: np.ndarray, cols: np.ndarray, left, right):
    """Terms of ``L · E_rc · R`` for unit entries at ``(rows[e], cols[e])``.

    ``left`` is CSC (its column ``r`` lists output rows ``i``) or CSR for ``Lᵀ``-style row
    reads; ``right`` likewise lists output columns ``j`` for index ``c``. Returns arrays
    ``(e, i, j, coef)``: entry ``e`` contributes ``coef`` at output position ``(i, j)``.
    """
    e1, i, a = _gather(left, rows)
    e2, j, b = _gather(right, cols[e1])
    return e1[e2], i[e2], j, a[e2] * b


class CipherBuilder:
    """Accumulates COO triplets of ``enc``/``dec`` and the segments while walking the model."""

    def __init__(self, n_params: int):
        self.n_params = n_params
        self.enc: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.dec: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.offset: list[np.ndarray] = []
        self.segments: list[Segment] = []
        self.size = 0

    def add(self, seg: Segment, enc, dec, offset: np.ndarray | None = None):
        self.enc.append(enc)
        self.dec.append(dec)
        self.offset.append(np.zeros(seg.nnz) if offset is None else offset)
        self.segments.append(seg)
        self.size = seg.stop

    def add_vector(self, name: str, idx: np.ndarray, key: Key, kind: str = "rest"):
        """Encrypt ``theta[idx]`` with a (non-homogeneous) key as its own segment."""
        a, ainv = key.matrix(False).tocoo(), key.inverse_matrix(False).tocoo()
        s = self.size
        seg = Segment(name, kind, s, s + idx.size, idx.size)
        self.add(seg, (s + a.row, idx[a.col], a.data), (idx[ainv.row], s + ainv.col, ainv.data))

    def build(self) -> LinearCipher:
        def coo(parts, shape):
            if not parts:
                return sp.csr_matrix(shape)
            r, c, v = (np.concatenate(p) for p in zip(*parts))
            return sp.csr_matrix((v, (r, c)), shape=shape)

        return LinearCipher(coo(self.enc, (self.size, self.n_params)),
                            np.concatenate(self.offset) if self.offset else np.zeros(0),
                            coo(self.dec, (self.n_params, self.size)), tuple(self.segments))


def _layer(b: CipherBuilder, name: str, low, key_out: Key, key_in: Key):
    """Add ``Ŵ = A_out · M · A_in⁻¹`` of one lowered layer to the builder."""
    width = low.n_in + 1
    e, i, j, coef = sandwich(low.rows, low.cols, key_out.matrix().tocsc(),
                             key_in.inverse_matrix().tocsr())
    uniq, inv = np.unique(i * width + j, return_inverse=True)
    s = b.size
    w_rows, w_cols = np.divmod(uniq, width)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(w_rows, minlength=low.n_out + 1))])
    params = low.src >= 0
    seg = Segment(name, "layer", s, s + uniq.size, int(np.unique(low.src[params]).size),
                  low.shape, indptr, w_cols)
    live = params[e]
    enc = (s + inv[live], low.src[e[live]], coef[live])
    offset = np.bincount(inv, weights=coef * low.const[e], minlength=uniq.size)
    # decryption: M[r, c] = Σ A_out⁻¹[r, i] · Ŵ[i, j] · A_in[j, c] at each parameter's first entry
    pos = low.first_positions(b.n_params)
    p = np.flatnonzero(pos >= 0)
    e, i, j, coef = sandwich(low.rows[pos[p]], low.cols[pos[p]],
                             key_out.inverse_matrix().tocsr(), key_in.matrix().tocsc())
    k = np.minimum(np.searchsorted(uniq, i * width + j), uniq.size - 1)
    hit = uniq[k] == i * width + j
    dec = (p[e[hit]], s + k[hit], coef[hit])
    b.add(seg, enc, dec, offset)


def lowered_cipher(plan: NetworkPlan, keys: KeySet) -> LinearCipher:
    """The :class:`LinearCipher` of ``plan`` under lowered-space ``keys``.

    Key order is :meth:`NetworkPlan.key_slots`: chained boundaries (or per-layer in/out pairs),
    then the rest key.
    """
    expected = len(plan.layers) + 1 if plan.chained else 2 * len(plan.layers)
    if keys.space != "lowered" or len(keys.keys) != expected + 1:
        raise ValueError(f"need {expected + 1} lowered-space keys, got {len(keys.keys)} "
                         f"({keys.space})")
    b = CipherBuilder(plan.n_params)
    for li, lp in enumerate(plan.layers):
        k_in, k_out = (keys.keys[li], keys.keys[li + 1]) if plan.chained else \
            (keys.keys[2 * li], keys.keys[2 * li + 1])
        if (k_in.n, k_out.n) != (lp.lowered.n_in, lp.lowered.n_out):
            raise ValueError(f"{lp.name}: keys of size {(k_in.n, k_out.n)} do not fit "
                             f"{(lp.lowered.n_in, lp.lowered.n_out)}")
        _layer(b, lp.name, lp.lowered, k_out, k_in)
    rest_key = keys.keys[-1]
    if rest_key.n != plan.rest.size:
        raise ValueError(f"rest key has size {rest_key.n}, expected {plan.rest.size}")
    b.add_vector("rest", plan.rest, rest_key)
    return b.build()
