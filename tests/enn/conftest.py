"""A small ENN trained once per test session (about 1 s on one CPU thread)."""

from __future__ import annotations

import pytest
import torch

from fedsim.enn import EnnConfig, load_or_train

SMALL = {"n": 16, "ratio": 2, "slots": 3, "residual_blocks": 1, "decoder_width": 64, "encoder_hidden": (16,),
             "steps": 600, "batch": 128}


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def small_config() -> EnnConfig:
    return EnnConfig(**SMALL)


@pytest.fixture(scope="session")
def small_net(small_config, tmp_path_factory):
    result, _ = load_or_train(small_config, tmp_path_factory.mktemp("enn-cache"))
    return result.net
