"""Fixtures shared by the KeyNet tests."""

from __future__ import annotations

import pytest
import torch
from keynet_nets import LENET_INPUT, make_lenet

from fedsim import engine
from fedsim.config import RunConfig
from fedsim.hooks import EngineHooks
from fedsim.keynet.plan import plan_network


@pytest.fixture(scope="module")
def lenet():
    """LeNet-5 with average pooling, seed 0."""
    return make_lenet()


@pytest.fixture(scope="module")
def plan(lenet):
    """KeyNet plan of :func:`lenet` on 1x28x28 inputs."""
    return plan_network(lenet, LENET_INPUT)


@pytest.fixture
def run_final():
    """Run a config; return its result and its last global model (plaintext state)."""
    def go(cfg: RunConfig):
        states = []
        torch.set_num_threads(1)
        res = engine.run(cfg, hooks=EngineHooks(on_global_model=lambda rnd, s: states.append(s)))
        return res, states[-1]
    return go
