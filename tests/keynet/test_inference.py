"""Encrypted inference: the ciphertext of LeNet-5 (avg pool) is a working network on A_0·x."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from keynet_nets import LENET_INPUT, make_lenet, perturbed_state

from fedsim.keynet.domain import KeyNetDomain, make_keys
from fedsim.keynet.inference import encrypt_input, encrypted_network
from fedsim.keynet.keys import KeySet
from fedsim.keynet.plan import plan_network


@pytest.fixture(scope="module")
def images():
    return torch.randn(16, *LENET_INPUT, generator=torch.Generator().manual_seed(0))


def _run(lenet, plan, keys, images, image_key=None):
    dom = KeyNetDomain(lenet, LENET_INPUT, keys, plan=plan)
    net = encrypted_network(dom, dom.to_wire(lenet.state_dict()))
    with torch.no_grad():
        out = net(encrypt_input(image_key or keys.keys[0], images))
        ref = lenet(images)
    return float((out - ref).abs().max()), float(ref.abs().max())


def test_plan_detects_the_chain_and_boundaries(plan):
    assert plan.chained
    slots = plan.key_slots(alpha=4)
    assert [s.alpha for s in slots] == [4, 1, 4, 1, 4, 1, 1, 1, 1]
    assert slots[-2].identity and not slots[-3].identity


@pytest.mark.parametrize("alpha", [1, 2, 4])
def test_encrypted_inference_matches_plain(lenet, plan, images, alpha):
    keys = make_keys(plan, 21, alpha=alpha)
    assert KeyNetDomain(lenet, LENET_INPUT, keys, plan=plan).image_key is keys.keys[0]
    err, _ = _run(lenet, plan, keys, images)
    assert err <= 1e-5


def test_encrypted_inference_with_encrypted_output(lenet, plan, images):
    keys = make_keys(plan, 22, alpha=2, encrypt_output=True)
    dom = KeyNetDomain(lenet, LENET_INPUT, keys, plan=plan)
    net = encrypted_network(dom, dom.to_wire(lenet.state_dict()))
    with torch.no_grad():
        out = net(encrypt_input(keys.keys[0], images)).double().numpy()
        ref = lenet(images).double().numpy()
    a_out = keys.keys[-2].matrix(homogeneous=False)
    assert abs(out - (a_out @ ref.T).T).max() <= 1e-5
    assert abs(out - ref).max() > 1e-2


def test_averaged_ciphertext_is_the_averaged_network(lenet, plan, images):
    keys = make_keys(plan, 23, alpha=2)
    dom = KeyNetDomain(lenet, LENET_INPUT, keys, plan=plan)
    states = [perturbed_state(lenet, s, 0.05) for s in range(3)]
    mean_wire = sum(dom.to_wire(s) for s in states) / 3
    mean_model = make_lenet()
    mean_model.load_state_dict({k: sum(s[k] for s in states) / 3 for k in states[0]})
    with torch.no_grad():
        out = encrypted_network(dom, mean_wire)(encrypt_input(keys.keys[0], images))
        assert float((out - mean_model(images)).abs().max()) <= 1e-5


def test_wrong_image_key_gives_large_error(lenet, plan, images):
    keys = make_keys(plan, 24, alpha=2)
    wrong = make_keys(plan, 25, alpha=2).keys[0]
    err, scale = _run(lenet, plan, keys, images, image_key=wrong)
    assert err > 0.05 * scale


@pytest.mark.parametrize("alpha", [2, 4])
def test_block_key_at_relu_boundary_breaks_inference(lenet, plan, images, alpha):
    slots = plan.key_slots(alpha=1)
    slots[1] = dataclasses.replace(slots[1], alpha=alpha)  # conv1 output feeds a ReLU
    err, scale = _run(lenet, plan, KeySet.generate(slots, 26, "lowered"), images)
    assert err > 0.01 * scale


def test_tanh_boundaries_use_unit_gains(images):
    net = make_lenet(activation="tanh")
    plan = plan_network(net, LENET_INPUT)
    slots = plan.key_slots(alpha=2)
    assert not slots[1].gains
    err, _ = _run(net, plan, KeySet.generate(slots, 27, "lowered"), images)
    assert err <= 1e-5
    slots[1] = dataclasses.replace(slots[1], gains=True)
    err, scale = _run(net, plan, KeySet.generate(slots, 27, "lowered"), images)
    assert err > 0.01 * scale


def test_maxpool_network_is_not_a_chain():
    torch.manual_seed(0)
    from fedsim.models import build_model
    plan = plan_network(build_model("lenet5", pooling="max"), LENET_INPUT)
    assert not plan.chained and len(plan.layers) == 5
