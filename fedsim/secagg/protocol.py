"""What each party computes in one round of secure aggregation (Bonawitz et al. 2017, Fig. 4,
semi-honest: no signatures, no consistency check round).

Round 0, AdvertiseKeys: each client sends two X25519 public keys (``c`` encrypts shares, ``s``
makes pairwise masks); the server sends the list (U1) and the threshold ``t`` back.
Round 1, ShareKeys: each client Shamir-shares its ``s`` private key and its self-mask seed
``b`` among U1 (t of |U1|) and sends each peer's bundle sealed under their shared ``c`` key; the
server routes the bundles of U2 (those who sent) to each member of U2.
Round 2, MaskedInputCollection: ``y_u = x_u + PRG(b_u) + sum_{v in U2, v > u} PRG(s_uv)
- sum_{v in U2, v < u} PRG(s_uv) mod 2^k`` (``x_u``: the fixed-point weighted update,
:mod:`fedsim.secagg.ring`); the server adds the masked inputs of U3 (those who sent).
Round 3, Unmasking: the server sends U3; each client of U3 that is still there (U4) reveals its
shares of ``b_v`` for v in U3 and of ``s_v`` for v in U2 \\ U3, never both for one client. The
server rebuilds them, removes ``PRG(b_v)`` of the survivors and the dropped clients' pairwise
masks, and holds ``sum_{u in U3} x_u`` exactly. Any round with fewer than ``t`` clients aborts.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fedsim.secagg import wire
from fedsim.secagg.primitives import (
    ENCRYPTION_INFO,
    KEY_BYTES,
    MASK_INFO,
    SEED_BYTES,
    agree,
    combine,
    open_sealed,
    prg,
    private_bytes,
    private_key,
    public_bytes,
    seal,
    share,
)
from fedsim.secagg.ring import Ring

#: Bytes of one client's per-round secrets: c private key, s private key, self-mask seed b.
SECRET_BYTES = 2 * KEY_BYTES + SEED_BYTES


class SecAggAbort(Exception):
    """Too few clients remain for the threshold: the round ends without an update."""


def threshold_count(fraction: float, n: int) -> int:
    """Clients needed to reconstruct (and to finish the round): ``max(2, ceil(fraction n))``;
    never 1, so the server only ever learns a sum of at least two updates."""
    return max(2, math.ceil(fraction * n - 1e-9))


def _points(ids: list[int]) -> dict[int, int]:
    """Each client's Shamir evaluation point: its rank in the key list, from 1."""
    return {c: i + 1 for i, c in enumerate(sorted(ids))}


class ClientRound:
    """One client's side of one round; ``secret`` holds its :data:`SECRET_BYTES` seeded bytes."""

    def __init__(self, cid: int, rnd: int, secret: bytes, ring: Ring):
        if len(secret) != SECRET_BYTES:
            raise ValueError(f"client secrets are {SECRET_BYTES} bytes, got {len(secret)}")
        self.cid, self.rnd, self.ring = cid, rnd, ring
        self._c = private_key(secret[:KEY_BYTES])
        self._s = private_key(secret[KEY_BYTES:2 * KEY_BYTES])
        self._b = secret[2 * KEY_BYTES:]
        self._keys: dict[int, bytes] = {}  # U1: id -> c_pk | s_pk
        self._held: dict[int, tuple[bytes, bytes]] = {}  # owner -> (s share, b share) held here
        self.n1 = 0

    def advertise(self) -> bytes:
        """Round 0: ``sa_advertise``."""
        return public_bytes(self._c) + public_bytes(self._s)

    def share_keys(self, keys_payload: bytes) -> bytes:
        """Round 1: ``sa_shares`` (sealed share bundles for every other client of U1)."""
        t, self._keys = wire.unpack_keys(keys_payload)
        self.n1 = len(self._keys)
        points = _points(list(self._keys))
        s_shares = share(private_bytes(self._s), t, self.n1)
        b_shares = share(self._b, t, self.n1)
        mine = points[self.cid] - 1
        self._held[self.cid] = (s_shares[mine], b_shares[mine])
        bundles = {}
        for v in self._keys:
            if v != self.cid:
                key = agree(self._c, self._keys[v][:KEY_BYTES], ENCRYPTION_INFO)
                plain = (self.cid.to_bytes(4, "little") + v.to_bytes(4, "little")
                         + s_shares[points[v] - 1] + b_shares[points[v] - 1])
                bundles[v] = seal(key, self.cid, v, self.rnd, plain)
        return wire.pack_bundles(bundles)

    def masked_input(self, routed_payload: bytes, update: torch.Tensor | np.ndarray,
                     weight: int) -> tuple[bytes, int]:
        """Round 2: ``(masked_update payload, clipped coordinates)`` of ``weight * update``."""
        peers = wire.unpack_bundles(routed_payload)  # U2 \ {self}
        for u, sealed in peers.items():
            key = agree(self._c, self._keys[u][:KEY_BYTES], ENCRYPTION_INFO)
            plain = open_sealed(key, u, self.cid, self.rnd, sealed)
            self._held[u] = (plain[8:8 + KEY_BYTES], plain[8 + KEY_BYTES:])
        y, clipped = self.ring.encode(update, weight, self.n1)
        y += prg(self._b, y.size, self.ring.dtype)
        for v in sorted(peers):
            mask = prg(agree(self._s, self._keys[v][KEY_BYTES:], MASK_INFO), y.size, self.ring.dtype)
            if self.cid < v:
                y += mask
            else:
                y -= mask
        return wire.pack_masked(y, self.ring.modulus_bits, self.ring.fraction_bits), clipped

    def reveal(self, unmask_payload: bytes) -> bytes:
        """Round 3: ``sa_reveal``: b shares of U3, s shares of U2 \\ U3 (never both for one)."""
        survivors = set(wire.unpack_ids(unmask_payload))
        return wire.pack_reveal({v: self._held[v][1] for v in self._held if v in survivors},
                                {v: self._held[v][0] for v in self._held if v not in survivors})


class ServerRound:
    """The server's side of one round: routes shares, sums masked inputs, removes the masks.

    It holds public keys, sealed bundles it cannot open, the running sum of masked inputs and,
    in Round 3, the revealed secrets; never a single client's unmasked input.
    """

    def __init__(self, ring: Ring, numel: int, threshold: int):
        self.ring, self.numel, self.threshold = ring, numel, threshold
        self._s_pk: dict[int, bytes] = {}
        self._u2: list[int] = []
        self._u3: list[int] = []
        self._total = np.zeros(numel + 1, dtype=ring.dtype)

    def _need(self, have: int, what: str) -> None:
        if have < self.threshold:
            raise SecAggAbort(f"{what}: {have} clients, threshold {self.threshold}")

    def key_list(self, advertised: dict[int, bytes]) -> bytes:
        """Round 0: the ``sa_keys`` payload for every client of U1."""
        self._need(len(advertised), "AdvertiseKeys")
        self._s_pk = {c: pk[KEY_BYTES:] for c, pk in advertised.items()}
        return wire.pack_keys(self.threshold, advertised)

    def route(self, shares: dict[int, bytes]) -> dict[int, bytes]:
        """Round 1: each member of U2's ``sa_routed`` payload."""
        self._need(len(shares), "ShareKeys")
        self._u2 = sorted(shares)
        sent = {u: wire.unpack_bundles(shares[u]) for u in self._u2}
        return {v: wire.pack_bundles({u: sent[u][v] for u in self._u2 if u != v})
                for v in self._u2}

    def add_masked(self, cid: int, payload: bytes) -> None:
        """Round 2: add one client's masked input to the running sum."""
        self._total += wire.unpack_masked(payload, self.ring.dtype)
        self._u3.append(cid)

    def unmask_request(self) -> bytes:
        """Round 3: the ``sa_unmask`` payload (U3) for every client of U3."""
        self._need(len(self._u3), "MaskedInputCollection")
        return wire.pack_ids(self._u3)

    def unmask(self, reveals: dict[int, bytes]) -> np.ndarray:
        """Round 3: ``sum_{u in U3} x_u`` (ring elements, p + 1) from U4's revealed shares."""
        self._need(len(reveals), "Unmasking")
        points = _points(list(self._s_pk))
        held = {u: wire.unpack_reveal(reveals[u]) for u in sorted(reveals)[:self.threshold]}
        total, dtype = self._total.copy(), self.ring.dtype
        for v in sorted(self._u3):
            total -= prg(combine([(points[u], b[v]) for u, (b, _) in held.items()]), total.size,
                         dtype)
        for v in sorted(set(self._u2) - set(self._u3)):
            s_v = private_key(combine([(points[u], s[v]) for u, (_, s) in held.items()]))
            for u in sorted(self._u3):
                mask = prg(agree(s_v, self._s_pk[u], MASK_INFO), total.size, dtype)
                if u < v:  # y_u added this mask
                    total -= mask
                else:
                    total += mask
        return total
