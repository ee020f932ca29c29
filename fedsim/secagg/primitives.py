"""The protocol's cryptographic primitives, all from maintained libraries.

``cryptography``: X25519 key agreement, HKDF-SHA256 key derivation, AES-128-GCM (share bundles)
and AES-128-CTR as the pseudo-random generator that expands a 16-byte seed into a mask.
PyCryptodome: Shamir secret sharing over GF(2^128) (16-byte secrets; a 32-byte X25519 private key
is shared as two halves at the same points).

Notes
-----
Key pairs and mask seeds are derived from bytes the caller supplies (a client's seeded stream),
so a run is reproducible. PyCryptodome draws the Shamir polynomials' random coefficients from
the OS and takes no generator: the share bytes differ between runs, but their sizes and the
reconstructed secrets do not, so no table does.
"""

from __future__ import annotations

import struct

import numpy as np
from Crypto.Protocol.SecretSharing import Shamir
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32  # an X25519 public or private key
SEED_BYTES = 16  # a mask seed, a share-encryption key, one Shamir share
TAG_BYTES = 16  # AES-GCM authentication tag
MASK_INFO = b"fedsim secagg pairwise mask"
ENCRYPTION_INFO = b"fedsim secagg share encryption"


def private_key(raw: bytes) -> X25519PrivateKey:
    """The X25519 private key with the 32 given bytes (clamped by the library)."""
    return X25519PrivateKey.from_private_bytes(raw)


def public_bytes(sk: X25519PrivateKey) -> bytes:
    """The 32-byte raw encoding of ``sk``'s public key."""
    return sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def private_bytes(sk: X25519PrivateKey) -> bytes:
    return sk.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())


def agree(sk: X25519PrivateKey, peer_public: bytes, info: bytes) -> bytes:
    """A 16-byte key both ends derive: HKDF-SHA256(X25519(sk, peer), info)."""
    shared = sk.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=None, info=info).derive(shared)


def prg(seed: bytes, count: int, dtype: np.dtype) -> np.ndarray:
    """``count`` pseudo-random ring elements: AES-128-CTR keystream under ``seed`` (zero IV)."""
    nbytes = count * dtype.itemsize
    enc = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    return np.frombuffer(enc.update(bytes(nbytes)) + enc.finalize(), dtype=dtype)


def _nonce(sender: int, recipient: int, rnd: int) -> bytes:
    """12-byte GCM nonce, unique per (key, message): each key encrypts one message each way."""
    return struct.pack("<III", sender, recipient, rnd)


def seal(key: bytes, sender: int, recipient: int, rnd: int, plaintext: bytes) -> bytes:
    """AES-128-GCM ciphertext of ``plaintext`` (its length + 16 tag bytes)."""
    return AESGCM(key).encrypt(_nonce(sender, recipient, rnd), plaintext, None)


def open_sealed(key: bytes, sender: int, recipient: int, rnd: int, ciphertext: bytes) -> bytes:
    """Inverse of :func:`seal` (raises ``cryptography.exceptions.InvalidTag`` if tampered)."""
    return AESGCM(key).decrypt(_nonce(sender, recipient, rnd), ciphertext, None)


def share(secret: bytes, threshold: int, n: int) -> list[bytes]:
    """Shares of ``secret`` (16 or 32 bytes) for points 1..n, any ``threshold`` of which rebuild
    it; share ``i - 1`` belongs to point ``i`` and is as long as the secret."""
    halves = [secret[i:i + SEED_BYTES] for i in range(0, len(secret), SEED_BYTES)]
    split = [Shamir.split(threshold, n, half) for half in halves]
    return [b"".join(s[i][1] for s in split) for i in range(n)]


def combine(points: list[tuple[int, bytes]]) -> bytes:
    """The secret from ``(point, share)`` pairs (at least the threshold of them)."""
    width = len(points[0][1])
    return b"".join(Shamir.combine([(i, s[j:j + SEED_BYTES]) for i, s in points])
                    for j in range(0, width, SEED_BYTES))
