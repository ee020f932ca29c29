"""Channel-space keys, and transmission-only encryption of MobileNetV2 (residual, BatchNorm)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from keynet_nets import LENET_INPUT, make_lenet, perturbed_state

from fedsim.domain import PlainDomain, float_entries
from fedsim.keynet.domain import KeyNetDomain
from fedsim.keynet.keys import KeySet
from fedsim.keynet.report import nnz_table
from fedsim.models import build_model


def _max_rel(a: dict, b: dict) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max() /
                     max(b[k].double().abs().max(), 1e-30)) for k in b)


def _mobilenet(width: float) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("mobilenet_v2", in_channels=3, image_size=32, width_mult=width)
    with torch.no_grad():  # non-trivial BatchNorm running statistics
        model.train()(torch.randn(4, 3, 32, 32))
    return model.eval()


def _check_domain(dom: KeyNetDomain, model: torch.nn.Module, clients: int = 3):
    """Round trip and weighted averaging (with exact zeros) through ``dom``."""
    state = model.state_dict()
    assert list(dom.from_wire(dom.to_wire(state))) == float_entries(state)
    assert _max_rel(dom.from_wire(dom.to_wire(state)), {k: state[k] for k in
                                                          float_entries(state)}) <= 1e-6
    states = [perturbed_state(model, s) for s in range(clients)]
    first = float_entries(state)[0]
    states[0][first].zero_()
    w = np.random.default_rng(0).dirichlet(np.ones(clients))
    thetas = [dom.flatten(s) for s in states]
    mean_cipher = sum(wk * dom.cipher.encrypt(t) for wk, t in zip(w, thetas))
    mean_plain = sum(wk * t for wk, t in zip(w, thetas))
    assert np.abs(dom.cipher.decrypt(mean_cipher) - mean_plain).max() <= 1e-10


@pytest.mark.parametrize("alpha", [1, 2, 4])
def test_channel_space_lenet(alpha):
    model = make_lenet()
    dom = KeyNetDomain.from_seed(model, LENET_INPUT, 3, space="channel", alpha=alpha)
    assert dom.numel == PlainDomain(model.state_dict()).numel
    assert all(s.nnz == s.plain for s in dom.segments)
    _check_domain(dom, model)
    state = model.state_dict()
    wire = dom.to_wire(state).double().numpy()
    assert np.abs(wire - PlainDomain(state).to_wire(state).double().numpy()).max() > 1e-3


def test_channel_keys_round_trip_bytes():
    model = make_lenet()
    dom = KeyNetDomain.from_seed(model, LENET_INPUT, 5, space="channel", alpha=2)
    keys = KeySet.from_bytes(dom.keys.to_bytes())
    again = KeyNetDomain(model, LENET_INPUT, keys, space="channel")
    state = model.state_dict()
    assert torch.equal(dom.to_wire(state), again.to_wire(state))


def test_mobilenet_lowered_per_layer_keys():
    model = _mobilenet(0.25)
    dom = KeyNetDomain.from_seed(model, (3, 16, 16), 7, alpha=2)
    assert not dom.plan.chained
    bn = {f"{n}." for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    plan = dom.plan
    bn_idx = np.concatenate([np.arange(plan.offsets[i], plan.offsets[i + 1])
                             for i, k in enumerate(plan.names) if k[:k.rfind(".") + 1] in bn])
    assert bn_idx.size > 0 and np.isin(bn_idx, plan.rest).all()  # BatchNorm is vector keyed
    assert dom.numel > PlainDomain(model.state_dict()).numel
    lowered = [lp.lowered.nnz for lp in plan.layers]
    assert lowered == [r.nnz for r in nnz_table(model, (3, 16, 16))]  # counted == built
    layers = [seg for seg in dom.segments if seg.kind == "layer"]
    assert all(seg.nnz <= 4 * n for seg, n in zip(layers, lowered))
    _check_domain(dom, model)


def test_mobilenet_channel_space():
    model = _mobilenet(0.5)
    dom = KeyNetDomain.from_seed(model, (3, 32, 32), 8, space="channel", alpha=2)
    assert dom.numel == PlainDomain(model.state_dict()).numel
    _check_domain(dom, model)


@pytest.mark.slow
def test_mobilenet_full_width_channel_space():
    model = _mobilenet(1.0)
    dom = KeyNetDomain.from_seed(model, (3, 32, 32), 9, space="channel", alpha=4)
    assert dom.numel == PlainDomain(model.state_dict()).numel
    _check_domain(dom, model, clients=2)
