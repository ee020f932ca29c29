"""The fp32 baseline codec: the update as raw float32, 4 bytes per coordinate plus a header."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from fedsim.codecs.base import EncodedUpdate, UpdateCodec
from fedsim.config import CodecSettings
from fedsim.config.registry import CODECS
from fedsim.wire import HEADER_BYTES, pack_vector, unpack_vector


class IdentityCodecConfig(CodecSettings):
    """``codec: {kind: identity}``: raw float32 updates (the default)."""

    kind: Literal["identity"] = "identity"


class IdentityCodec(UpdateCodec):
    """Sends the update unchanged: ``8 + 4 p`` bytes for p coordinates (see :mod:`fedsim.wire`)."""

    name = "identity"

    def payload_nbytes(self, numel: int) -> int:
        """Exact payload size in bytes for ``numel`` coordinates: ``8 + 4 numel``."""
        return HEADER_BYTES + 4 * numel

    def encoded_nbytes(self, numel: int, rnd: int) -> int:
        return self.payload_nbytes(numel)

    def encode(self, update: torch.Tensor, *, seed: int, slot: int, rnd: int = 0) -> EncodedUpdate:
        payload = pack_vector(update)
        return EncodedUpdate(payload, {"bits_per_coord": 8 * len(payload) / update.numel(),
                                       "rel_error": 0.0})

    def decode(self, payload: bytes, *, numel: int) -> torch.Tensor:
        vec = unpack_vector(payload)
        if vec.numel() != numel:
            raise ValueError(f"update has {vec.numel()} values, expected {numel}")
        return vec

    def aggregate(self, payloads: Sequence[bytes], weights: Sequence[float], slots: Sequence[int],
                  *, numel: int) -> torch.Tensor:
        total = torch.zeros(numel, dtype=torch.float64)
        for payload, w in zip(payloads, weights, strict=True):
            total += w * self.decode(payload, numel=numel).double()
        return total.float()


CODECS.register(IdentityCodecConfig, lambda cfg, ctx: IdentityCodec())
