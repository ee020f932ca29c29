"""KeyNet keys: sparse invertible maps stored compactly, seeded, serializable.

A key on ``n`` coordinates is ``A = P · B · D``: ``D`` a positive diagonal (gains), ``B`` block
diagonal with dense ``α × α`` doubly-stochastic blocks (identity when ``α = 1``), ``P`` a
permutation. Then ``A⁻¹ = D⁻¹ · B⁻¹ · Pᵀ`` and both have at most ``α`` nonzeros per row and
column. Blocks are ``w0·I + Σ_k w_k·Cᵏ`` (``C`` the cyclic shift, ``w0 ∈ [0.6, 0.8]`` dominant,
weights summing to 1) conjugated by a random block-local permutation, so they are strictly
diagonally dominant with ``‖S⁻¹‖∞ ≤ 1/(2·w0 − 1) ≤ 5``. With ``α = 1`` the key is a positive
generalized permutation, which commutes with ReLU: ``ReLU(A z) = A ReLU(z)``.

Gains are ``continuous`` (log-uniform in ``[1/2, 2]``, as in the KeyNet paper) or
``power_of_two`` (``2**k``, ``k`` uniform on ``{-2, ..., 2}``). Multiplying by a power of two
and permuting are exact in binary floating point (barring overflow and subnormals), so with
``α = 1`` and power-of-two gains every ciphertext value is exactly ``2**k`` times one
plaintext value or constant, and encryption, averaging and decryption commute bit for bit with
the plaintext arithmetic. The price is a smaller key space: 5 possible gains per coordinate
(``log2 5 ≈ 2.3`` bits) instead of a continuum.

Byte format (little endian), used by :meth:`Key.to_bytes` / :meth:`KeySet.to_bytes`:

* key: ``u32 n, u32 α, u32 perm[n], f64 gain[n]`` and, when ``α > 1``, the blocks as f64:
  ``⌊n/α⌋`` full ``α × α`` blocks then one ``r × r`` tail block (``r = n mod α``), row major.
  Size: ``8 + 12·n + [α > 1]·8·(⌊n/α⌋·α² + r²)`` bytes (see :meth:`Key.nbytes`).
* key set: ``b"KNKS", u8 space (0 lowered, 1 channel), u32 count``, then the keys:
  ``9 + Σ key bytes`` (see :meth:`KeySet.nbytes`).
* key seed (the "seed over a secure channel" option): ``u64`` (:data:`SEED_BYTES` = 8 bytes).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

SPACES = ("lowered", "channel")
GAIN_KINDS = ("continuous", "power_of_two")
SEED_BYTES = 8
_MAGIC = b"KNKS"
_GAIN_RANGE = 2.0  # continuous gains are log-uniform in [1/2, 2]
POW2_MAX_EXP = 2  # power-of-two gains are 2**k, k uniform on {-2, ..., 2}


@dataclass(frozen=True)
class KeySlot:
    """What one key must look like: its size, block size and whether gains may differ from 1.

    ``identity`` slots get the identity key (e.g. the output boundary when logits stay clear).
    """

    size: int
    alpha: int = 1
    gains: bool = True
    identity: bool = False
    role: str = ""


@dataclass(frozen=True, eq=False)
class Key:
    """One key ``A = P·B·D`` on ``n`` coordinates (see module docstring).

    Attributes
    ----------
    perm : np.ndarray
        int64 permutation: coordinate ``k`` of ``B·D·x`` moves to ``perm[k]``.
    gain : np.ndarray
        float64 positive gains (the diagonal of ``D``).
    blocks : np.ndarray
        float64 ``(⌊n/α⌋, α, α)`` full blocks; empty ``(0, 1, 1)`` when ``α = 1``.
    tail : np.ndarray
        float64 ``(r, r)`` last block, ``r = n mod α``.
    """

    perm: np.ndarray
    gain: np.ndarray
    blocks: np.ndarray
    tail: np.ndarray

    @property
    def n(self) -> int:
        """Number of coordinates."""
        return int(self.perm.size)

    @property
    def alpha(self) -> int:
        """Block size α (1: positive generalized permutation)."""
        return int(self.blocks.shape[1]) if self.blocks.size else 1

    def nbytes(self) -> int:
        """Exact length of :meth:`to_bytes` in bytes."""
        extra = self.blocks.size + self.tail.size if self.alpha > 1 else 0
        return 8 + 12 * self.n + 8 * extra

    def _block_entries(self, inverse: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Entries (row, col, value) of ``B`` (or ``B⁻¹``) in local coordinates."""
        if self.alpha == 1:
            k = np.arange(self.n)
            return k, k, np.ones(self.n)
        a, nb = self.alpha, self.blocks.shape[0]
        full = np.linalg.inv(self.blocks) if inverse else self.blocks
        base = (np.arange(nb) * a)[:, None, None]
        r = np.broadcast_to(base + np.arange(a)[None, :, None], full.shape)
        c = np.broadcast_to(base + np.arange(a)[None, None, :], full.shape)
        parts = [(r.ravel(), c.ravel(), full.ravel())]
        t = self.tail.shape[0]
        if t:
            tb = np.linalg.inv(self.tail) if inverse else self.tail
            tr, tc = np.divmod(np.arange(t * t), t)
            parts.append((nb * a + tr, nb * a + tc, tb.ravel()))
        return tuple(np.concatenate(p) for p in zip(*parts))

    def matrix(self, homogeneous: bool = True) -> sp.csr_matrix:
        """``A`` as CSR; with ``homogeneous`` it is ``[[A, 0], [0, 1]]`` of size ``n + 1``."""
        r, c, v = self._block_entries(inverse=False)
        return self._assemble(self.perm[r], c, v * self.gain[c], homogeneous)

    def inverse_matrix(self, homogeneous: bool = True) -> sp.csr_matrix:
        """``A⁻¹ = D⁻¹ B⁻¹ Pᵀ`` as CSR (never stored, built from the compact form)."""
        r, c, v = self._block_entries(inverse=True)
        return self._assemble(r, self.perm[c], v / self.gain[r], homogeneous)

    def _assemble(self, r, c, v, homogeneous: bool) -> sp.csr_matrix:
        n = self.n + int(homogeneous)
        if homogeneous:
            r, c, v = np.append(r, self.n), np.append(c, self.n), np.append(v, 1.0)
        return sp.csr_matrix((v, (r, c)), shape=(n, n))

    def cond_bound(self) -> float:
        """Upper bound on ``‖A‖∞·‖A⁻¹‖∞`` for ``A`` and its homogeneous form (dimensionless)."""
        inv_norm = 1.0
        for b in ([self.blocks] if self.alpha > 1 else []) + ([self.tail] if self.tail.size else []):
            inv_norm = max(inv_norm, float(np.abs(np.linalg.inv(b)).sum(axis=-1).max()))
        if self.n == 0:
            return 1.0
        return max(float(self.gain.max()), 1.0) * max(inv_norm / float(self.gain.min()), 1.0)

    def to_bytes(self) -> bytes:
        """Serialize (format in the module docstring; ``len == self.nbytes()``)."""
        out = [struct.pack("<II", self.n, self.alpha), self.perm.astype("<u4").tobytes(),
               self.gain.astype("<f8").tobytes()]
        if self.alpha > 1:
            out += [self.blocks.astype("<f8").tobytes(), self.tail.astype("<f8").tobytes()]
        return b"".join(out)

    @classmethod
    def from_bytes(cls, buf: bytes | memoryview, offset: int = 0) -> tuple[Key, int]:
        """Parse one key at ``offset``; returns the key and the offset just past it."""
        n, a = struct.unpack_from("<II", buf, offset)
        offset += 8
        perm = np.frombuffer(buf, "<u4", n, offset).astype(np.int64)
        offset += 4 * n
        gain = np.frombuffer(buf, "<f8", n, offset).astype(np.float64)
        offset += 8 * n
        blocks, tail = np.zeros((0, 1, 1)), np.zeros((0, 0))
        if a > 1:
            nb, r = divmod(n, a)
            blocks = np.frombuffer(buf, "<f8", nb * a * a, offset).reshape(nb, a, a).copy()
            offset += 8 * nb * a * a
            tail = np.frombuffer(buf, "<f8", r * r, offset).reshape(r, r).copy()
            offset += 8 * r * r
        return cls(perm, gain, blocks, tail), offset


def identity_key(n: int) -> Key:
    """The identity key on ``n`` coordinates."""
    return Key(np.arange(n), np.ones(n), np.zeros((0, 1, 1)), np.zeros((0, 0)))


def _stochastic_blocks(rng: np.random.Generator, nb: int, a: int) -> np.ndarray:
    """``nb`` random ``a × a`` doubly-stochastic blocks with a dominant identity term."""
    w0 = rng.uniform(0.6, 0.8, nb)
    w = (1.0 - w0)[:, None] * rng.dirichlet(np.ones(a - 1), nb)
    eye = np.eye(a)
    s = w0[:, None, None] * eye
    for k in range(1, a):
        s = s + w[:, k - 1, None, None] * np.roll(eye, k, axis=1)
    pi = np.argsort(rng.random((nb, a)), axis=1)
    s = np.take_along_axis(s, pi[:, :, None], axis=1)
    return np.take_along_axis(s, pi[:, None, :], axis=2)


def random_gains(rng: np.random.Generator, n: int, kind: str = "continuous") -> np.ndarray:
    """``n`` positive float64 gains: log-uniform in ``[1/2, 2]`` or ``2**k``, ``|k| <= 2``."""
    if kind == "continuous":
        return np.exp(rng.uniform(-1, 1, n) * np.log(_GAIN_RANGE))
    if kind == "power_of_two":
        return np.ldexp(1.0, rng.integers(-POW2_MAX_EXP, POW2_MAX_EXP + 1, n))
    raise ValueError(f"gain kind must be one of {GAIN_KINDS}, got {kind!r}")


def random_key(rng: np.random.Generator, n: int, alpha: int = 1, gains: bool = True,
               gain_kind: str = "continuous") -> Key:
    """Sample a key on ``n`` coordinates with block size ``alpha`` and optional positive gains
    (``gain_kind``: ``"continuous"`` or ``"power_of_two"``, see the module docstring)."""
    if alpha < 1:
        raise ValueError("alpha must be >= 1")
    perm = rng.permutation(n).astype(np.int64)
    gain = random_gains(rng, n, gain_kind) if gains else np.ones(n)
    if alpha == 1 or n < 2:
        return Key(perm, gain, np.zeros((0, 1, 1)), np.zeros((0, 0)))
    a = min(alpha, n)
    nb, r = divmod(n, a)
    blocks = _stochastic_blocks(rng, nb, a)
    tail = _stochastic_blocks(rng, 1, r)[0] if r > 1 else np.ones((r, r))
    return Key(perm, gain, blocks, tail)


def _seed_int(seed: int | np.random.Generator) -> int:
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 2**63))
    return int(seed)


@dataclass(frozen=True, eq=False)
class KeySet:
    """All keys of one model, in the order fixed by the model's key slots, for one space."""

    space: str
    keys: tuple[Key, ...]

    def __post_init__(self):
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.space!r}")

    @classmethod
    def generate(cls, slots: list[KeySlot], seed: int | np.random.Generator,
                 space: str, gain_kind: str = "continuous") -> KeySet:
        """Sample one key per slot. Key ``k`` depends only on ``(seed, k, slots[k], gain_kind)``."""
        s = _seed_int(seed)
        keys = []
        for k, slot in enumerate(slots):
            if slot.identity:
                keys.append(identity_key(slot.size))
                continue
            rng = np.random.default_rng(np.random.SeedSequence([s, k]))
            keys.append(random_key(rng, slot.size, slot.alpha, slot.gains, gain_kind))
        return cls(space, tuple(keys))

    def nbytes(self) -> int:
        """Exact length of :meth:`to_bytes` in bytes."""
        return 9 + sum(k.nbytes() for k in self.keys)

    def to_bytes(self) -> bytes:
        """Serialize (format in the module docstring; ``len == self.nbytes()``)."""
        head = _MAGIC + struct.pack("<BI", SPACES.index(self.space), len(self.keys))
        return head + b"".join(k.to_bytes() for k in self.keys)

    @classmethod
    def from_bytes(cls, buf: bytes) -> KeySet:
        """Inverse of :meth:`to_bytes`."""
        if buf[:4] != _MAGIC:
            raise ValueError("not a KeyNet key set")
        space, count = struct.unpack_from("<BI", buf, 4)
        offset, keys = 9, []
        for _ in range(count):
            key, offset = Key.from_bytes(buf, offset)
            keys.append(key)
        if offset != len(buf):
            raise ValueError(f"{len(buf) - offset} trailing bytes after key set")
        return cls(SPACES[space], tuple(keys))


def seed_to_bytes(seed: int) -> bytes:
    """The 8-byte message that carries a key seed (``u64`` little endian)."""
    return struct.pack("<Q", seed)


def seed_from_bytes(buf: bytes) -> int:
    """Inverse of :func:`seed_to_bytes`."""
    return struct.unpack("<Q", buf)[0]
