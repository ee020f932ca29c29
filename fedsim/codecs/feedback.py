"""Error feedback (Seide et al. 2014; Karimireddy et al. 2019) for codecs whose client can compute
its own decoded contribution."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from fedsim.codecs.base import EncodedUpdate, UpdateCodec


class ContributionCodec(Protocol):
    """A codec whose client can compute what the server's decoder makes of its payload."""

    name: str

    def encode(self, update: torch.Tensor, *, seed: int, slot: int, rnd: int = 0) -> EncodedUpdate:
        ...

    def own_contribution(self, payload: bytes, slot: int, numel: int) -> torch.Tensor:
        ...

    def encoded_nbytes(self, numel: int, rnd: int) -> int | None:
        ...

    def aggregate(self, payloads: Sequence[bytes], weights: Sequence[float], slots: Sequence[int],
                  *, numel: int) -> torch.Tensor:
        ...


class FeedbackEncoder(UpdateCodec):
    """One client's encoder with error feedback: encodes ``x = update + residual`` and keeps
    ``x - own_contribution(code of x)`` for its next update.

    Metric ``ef_rel_error``: ``||residual|| / ||x||`` of this update (what the code lost).
    """

    def __init__(self, codec: ContributionCodec):
        self.codec = codec
        self.name = codec.name
        self.residual: torch.Tensor | None = None

    def encoded_nbytes(self, numel: int, rnd: int) -> int | None:
        return self.codec.encoded_nbytes(numel, rnd)

    def encode(self, update: torch.Tensor, *, seed: int, slot: int, rnd: int = 0) -> EncodedUpdate:
        x = update.detach().float().cpu()
        if self.residual is not None:
            x = x + self.residual
        enc = self.codec.encode(x, seed=seed, slot=slot, rnd=rnd)
        self.residual = x - self.codec.own_contribution(enc.payload, slot, x.numel())
        rel = float(self.residual.norm() / x.norm().clamp_min(1e-30))
        return EncodedUpdate(enc.payload, {**enc.metrics, "ef_rel_error": rel})

    def aggregate(self, payloads: Sequence[bytes], weights: Sequence[float], slots: Sequence[int],
                  *, numel: int) -> torch.Tensor:
        return self.codec.aggregate(payloads, weights, slots, numel=numel)
