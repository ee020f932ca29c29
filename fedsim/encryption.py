"""Weight-domain set-up per encryption scheme: who holds which domain, and what the key agent sends."""

from __future__ import annotations

import torch
from torch import nn

from fedsim.config import EncryptionConfig, KeyNetConfig, NoEncryptionConfig
from fedsim.domain import EncryptionSetup, PlainDomain
from fedsim.keynet.setup import keynet_setup


def make_encryption(cfg: EncryptionConfig, model: nn.Module, input_shape: tuple[int, ...],
                    initial_state: dict[str, torch.Tensor]) -> EncryptionSetup:
    """The :class:`EncryptionSetup` for ``cfg``."""
    if isinstance(cfg, NoEncryptionConfig):
        plain = PlainDomain(initial_state)
        return EncryptionSetup(plain, None, None, plain, init_by_client=False)
    if isinstance(cfg, KeyNetConfig):
        return keynet_setup(cfg, model, input_shape, initial_state)
    raise TypeError(f"no encryption for {cfg!r}")
