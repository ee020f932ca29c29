"""Weight-domain set-up per encryption scheme: who holds which domain, and what the key agent sends."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from fedsim.config import EncryptionConfig, EncryptionSettings
from fedsim.domain import PlainDomain, WeightDomain
from fedsim.registry import ENCRYPTIONS


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


class NoEncryptionConfig(EncryptionSettings):
    """No encryption: the plain weight domain."""

    kind: Literal["none"] = "none"


def plain_setup(cfg: NoEncryptionConfig, model: nn.Module, input_shape: tuple[int, ...],
                initial_state: dict[str, torch.Tensor]) -> EncryptionSetup:
    """Everyone, the server included, works on the plain domain."""
    plain = PlainDomain(initial_state)
    return EncryptionSetup(plain, None, None, plain, init_by_client=False)


ENCRYPTIONS.register(NoEncryptionConfig, plain_setup)


def make_encryption(cfg: EncryptionConfig, model: nn.Module, input_shape: tuple[int, ...],
                    initial_state: dict[str, torch.Tensor]) -> EncryptionSetup:
    """The :class:`EncryptionSetup` for ``cfg``, from the factory registered for its kind."""
    return ENCRYPTIONS.factory(cfg.kind)(cfg, model, input_shape, initial_state)
