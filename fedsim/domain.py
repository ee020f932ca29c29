"""Weight domains: how a model's state becomes the flat vector the server sees, and back.

The plain domain concatenates float tensors; KeyNet's domain encrypts. The server only ever
handles flat vectors and averages them, which is correct in any domain that is linear.
:class:`EncryptionSetup` is what an encryption scheme hands a run: who holds which domain, and
what the key agent sends (built by :func:`fedsim.encryption.make_encryption`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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


@dataclass(frozen=True)
class EncryptionSetup:
    """How an encryption scheme plugs into a run.

    ``client_domain`` is the domain clients start with (None: they must fetch keys first, through
    ``domain_from_key(key payload, init_broadcast payload or None)``); ``key_payload`` is what the
    key agent sends each client (None: no key agent traffic); ``eval_domain`` decodes the
    server's wire vector for the harness's evaluation (outside the protocol: the server never
    holds it). ``init_broadcast`` is a plaintext initial model the server sends every client once
    (``init_plain``); ``quantize_plaintext`` makes clients run a lossy codec on the plaintext
    update and send its encrypted dequantization as fp32; ``info`` goes to run_info;
    ``layout_payload`` is the encrypted model's public structure (``keynet_layout``), sent by
    the key agent to the server once at set-up.
    """

    client_domain: WeightDomain | None
    domain_from_key: Callable[[bytes, bytes | None], WeightDomain] | None
    key_payload: Callable[[str], bytes] | None
    eval_domain: WeightDomain
    init_by_client: bool
    init_broadcast: bytes | None = None
    quantize_plaintext: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    layout_payload: bytes | None = None  # the key-dependent structure the key agent publishes
