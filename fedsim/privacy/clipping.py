"""Client-side clipping to an L2 norm, and local DP's Gaussian noise, in front of any codec."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedsim.codecs.base import EncodedUpdate, UpdateCodec
from fedsim.rng import torch_generator


class ClippedCodec(UpdateCodec):
    """Clips each update to L2 norm ``clip_norm``, adds N(0, ``noise_std``^2) per coordinate
    (local DP; 0 for none), then encodes it with ``inner``.

    Notes
    -----
    Clipping precedes encoding, so a lossy codec (QSGD) encodes the clipped (and noised)
    update; encoding is post-processing and does not weaken local DP. The noise comes from the
    client's own stream (derived from its per-round codec seed). Aggregation and decoding are
    the inner codec's: this wrapper adds nothing to the wire.
    """

    def __init__(self, inner: UpdateCodec, *, clip_norm: float, noise_std: float):
        if not clip_norm > 0 or not noise_std >= 0:
            raise ValueError(f"clip_norm must be > 0 and noise_std >= 0, got {clip_norm}, "
                             f"{noise_std}")
        self.inner, self.clip_norm, self.noise_std = inner, clip_norm, noise_std
        self.name = inner.name

    def setup_payload(self) -> bytes | None:
        return self.inner.setup_payload()

    def encoded_nbytes(self, numel: int, rnd: int) -> int | None:
        return self.inner.encoded_nbytes(numel, rnd)

    def round_payload(self, rnd: int, global_wire: torch.Tensor) -> bytes | None:
        return self.inner.round_payload(rnd, global_wire)

    def for_client(self, cid: int) -> UpdateCodec:
        own = self.inner.for_client(cid)
        if own is self.inner:
            return self
        return ClippedCodec(own, clip_norm=self.clip_norm, noise_std=self.noise_std)

    def clip(self, update: torch.Tensor) -> tuple[torch.Tensor, float]:
        """The update scaled to L2 norm at most ``clip_norm``, and its norm before clipping."""
        norm = float(torch.linalg.vector_norm(update.double()))
        scale = min(1.0, self.clip_norm / norm) if norm > 0 else 1.0
        return update * scale, norm

    def encode(self, update: torch.Tensor, *, seed: int, slot: int, rnd: int = 0) -> EncodedUpdate:
        clipped, norm = self.clip(update)
        if self.noise_std > 0:
            noise = torch.randn(update.numel(), generator=torch_generator(seed, "local_dp"))
            clipped = clipped + self.noise_std * noise.to(update.device)
        encoded = self.inner.encode(clipped, seed=seed, slot=slot, rnd=rnd)
        metrics = {**encoded.metrics, "dp_update_norm": norm,
                   "dp_clipped": float(norm > self.clip_norm)}
        return EncodedUpdate(encoded.payload, metrics)

    def aggregate(self, payloads: Sequence[bytes], weights: Sequence[float], slots: Sequence[int],
                  *, numel: int) -> torch.Tensor:
        return self.inner.aggregate(payloads, weights, slots, numel=numel)

    def decode(self, payload: bytes, *, numel: int) -> torch.Tensor:
        return self.inner.decode(payload, numel=numel)
