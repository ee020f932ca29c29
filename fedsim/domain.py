"""Weight domains: how a model's state becomes the flat vector the server sees, and back.

The plain domain concatenates float tensors; KeyNet's domain encrypts. The server only ever
handles flat vectors and averages them, which is correct in any domain that is linear.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict

import torch


def float_entries(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the state entries that are federated: floating-point tensors, in state order.

    Integer buffers (BatchNorm's ``num_batches_tracked``) stay local.
    """
    return [k for k, v in state.items() if v.is_floating_point()]


class WeightDomain(ABC):
    """Maps a model state dict to the flat float32 vector that travels, and back."""

    @abstractmethod
    def to_wire(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """Flat float32 vector for ``state`` (ciphertext for encrypted domains)."""

    @abstractmethod
    def from_wire(self, flat: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """State dict (float entries only) for a flat wire vector."""

    @property
    @abstractmethod
    def numel(self) -> int:
        """Length of the wire vector."""

    @property
    def crypto_flops(self) -> tuple[float, float]:
        """FLOPs of one (``to_wire``, ``from_wire``) spent on encryption (0 when unencrypted)."""
        return 0.0, 0.0

    def encrypt_delta(self, plain_delta: torch.Tensor) -> torch.Tensor:
        """Wire-domain image of a flat plaintext update (identity for unencrypted domains)."""
        return plain_delta


class PlainDomain(WeightDomain):
    """The identity domain: float entries concatenated in state-dict order."""

    def __init__(self, template: dict[str, torch.Tensor]):
        self._names = float_entries(template)
        self._shapes = [tuple(template[k].shape) for k in self._names]
        self._sizes = [template[k].numel() for k in self._names]

    @property
    def numel(self) -> int:
        return sum(self._sizes)

    def to_wire(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([state[k].detach().reshape(-1).float().cpu() for k in self._names])

    def from_wire(self, flat: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        if flat.numel() != self.numel:
            raise ValueError(f"wire vector has {flat.numel()} values, expected {self.numel}")
        parts = torch.split(flat, self._sizes)
        return OrderedDict((k, p.reshape(s)) for k, p, s in zip(self._names, parts, self._shapes))
