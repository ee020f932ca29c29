"""Weight-domain set-up per encryption scheme: who holds which domain, and what the key agent sends."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from fedsim.config import EncryptionConfig, EncryptionSettings
from fedsim.config.registry import ENCRYPTIONS
from fedsim.domain import EncryptionSetup, PlainDomain


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
