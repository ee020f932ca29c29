"""The codec interface every uplink scheme (fp32, QSGD, ENN) implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class EncodedUpdate:
    """What a client puts on the wire for one update.

    ``payload`` is the exact serialized message body; ``metrics`` are per-update measurements
    for the reports (e.g. ``bits_per_coord``, ``rel_error``), never sent.
    """

    payload: bytes
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CodecContext:
    """What a codec factory may use besides its config: ``slots``, the number of updates
    aggregated per round (ENN's N), and ``model``, the initial global model (the server holds
    it; None where there is none)."""

    slots: int
    model: nn.Module | None = None


class UpdateCodec(ABC):
    """Encodes a flat float32 update (in the wire domain) and aggregates encoded updates.

    Notes
    -----
    A codec sees only 1-D float32 tensors: the engine flattens the model (or its KeyNet
    ciphertext) in a fixed order before encoding, so codecs compose with encryption.
    ``slot`` is the client's position (0..N-1) in the round's selection, for codecs with a
    fixed number of inputs (ENN).
    """

    #: Name used in scenario files (``codec: {kind: ...}``).
    name: str = ""

    def setup_payload(self) -> bytes | None:
        """Bytes each client must download once before its first update (None if nothing)."""
        return None

    def round_payload(self, rnd: int, global_wire: torch.Tensor) -> bytes | None:
        """Bytes every client selected in round ``rnd`` downloads with the global model
        ``global_wire`` (the codec's state for that round; None if nothing). The server calls
        it once per round, before the round's models go out."""
        return None

    def encoded_nbytes(self, numel: int, rnd: int) -> int | None:
        """The exact payload size of round ``rnd``'s update of ``numel`` values, if it does not
        depend on the values (None if it does): lets a client's timeline run ahead of its
        training."""
        return None

    def for_client(self, cid: int) -> UpdateCodec:
        """The encoder client ``cid`` uses: this codec, or a per-client one holding client state."""
        return self

    @abstractmethod
    def encode(self, update: torch.Tensor, *, seed: int, slot: int, rnd: int = 0) -> EncodedUpdate:
        """Encode one update; ``seed`` makes any randomness reproducible (owned by the client).

        ``rnd`` is the round number, for codes that all clients vary in the same way per round.
        """

    @abstractmethod
    def aggregate(
        self,
        payloads: Sequence[bytes],
        weights: Sequence[float],
        slots: Sequence[int],
        *,
        numel: int,
    ) -> torch.Tensor:
        """Return the weighted mean of the encoded updates as a float32 vector of ``numel``.

        ``weights`` sum to 1.
        """

    def decode(self, payload: bytes, *, numel: int) -> torch.Tensor:
        """Decode one client's update on its own (what an observer of the payload can recover).

        Codecs whose payloads cannot be decoded individually raise ``NotImplementedError``.
        """
        raise NotImplementedError(f"codec {self.name!r} cannot decode a single update")
