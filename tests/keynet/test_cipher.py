"""Encrypt / aggregate / decrypt in the lowered space: exact round trip, averaging, sizes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from keynet_nets import LENET_INPUT, perturbed_state

from fedsim.domain import float_entries
from fedsim.keynet.domain import KeyNetDomain, make_keys
from fedsim.keynet.keys import KeySet
from fedsim.keynet.plan import plan_network
from fedsim.keynet.report import nnz_table, size_table

ALPHAS = [1, 2, 4]


@pytest.fixture(scope="module", params=ALPHAS)
def domain(request, lenet, plan):
    return KeyNetDomain(lenet, LENET_INPUT, make_keys(plan, 11, alpha=request.param), plan=plan)


def _max_rel(a: dict, b: dict) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max() / b[k].double().abs().max())
               for k in b)


def test_round_trip_float64(domain, lenet):
    theta = domain.flatten(lenet.state_dict())
    back = domain.cipher.decrypt(domain.cipher.encrypt(theta))
    assert np.abs(back - theta).max() <= 1e-12


def test_round_trip_float32_domain(domain, lenet):
    state = lenet.state_dict()
    wire = domain.to_wire(state)
    assert wire.dtype == torch.float32 and wire.numel() == domain.numel
    back = domain.from_wire(wire)
    assert list(back) == float_entries(state)
    assert all(back[k].shape == state[k].shape and back[k].dtype == state[k].dtype for k in back)
    assert _max_rel(back, state) <= 1e-6


def test_weighted_mean_of_ciphertexts_decrypts_to_weighted_mean(domain, lenet):
    states = [perturbed_state(lenet, s) for s in range(3)]
    states[1]["0.bias"].zero_()  # exact zeros in one client
    states[2]["3.weight"][:, :, 2] = 0.0
    states[2]["7.bias"].zero_()
    w = np.array([0.5, 0.2, 0.3])
    thetas = [domain.flatten(s) for s in states]
    mean_cipher = sum(wk * domain.cipher.encrypt(t) for wk, t in zip(w, thetas))
    mean_plain = sum(wk * t for wk, t in zip(w, thetas))
    assert np.abs(domain.cipher.decrypt(mean_cipher) - mean_plain).max() <= 1e-12
    np.testing.assert_allclose(mean_cipher, domain.cipher.encrypt(mean_plain), atol=1e-12)


def test_to_wire_is_affine_for_weights_summing_to_one(domain, lenet):
    s1, s2 = perturbed_state(lenet, 1), perturbed_state(lenet, 2)
    a, b = 0.3, 0.7
    mix = {k: a * s1[k] + b * s2[k] for k in s1}
    lhs = domain.to_wire(mix)
    rhs = a * domain.to_wire(s1) + b * domain.to_wire(s2)
    assert float((lhs - rhs).abs().max()) <= 1e-5 * float(lhs.abs().max())


def test_zero_state_keeps_layout(domain, lenet):
    zero = {k: torch.zeros_like(v) for k, v in lenet.state_dict().items()}
    wire = domain.to_wire(zero)
    assert wire.numel() == domain.numel
    back = domain.from_wire(wire)
    assert all(float(v.abs().max()) == 0.0 for v in back.values())


def test_nnz_alpha_one_equals_plain_lowered(lenet, plan):
    dom = KeyNetDomain(lenet, LENET_INPUT, make_keys(plan, 3, alpha=1), plan=plan)
    layers = [r for r in size_table(dom) if r.kind == "layer"]
    assert [r.nnz for r in layers] == [r.nnz for r in nnz_table(lenet, LENET_INPUT)]


@pytest.mark.parametrize("alpha", [2, 4, pytest.param(8, marks=pytest.mark.slow)])
def test_nnz_block_keys_bounded(lenet, plan, alpha):
    slots = [dataclasses.replace(s, alpha=alpha, identity=False) for s in plan.key_slots()]
    keys = KeySet.generate(slots, 5, "lowered")  # α at every boundary (weights only)
    dom = KeyNetDomain(lenet, LENET_INPUT, keys, plan=plan)
    layers = [s for s in dom.segments if s.kind == "layer"]
    for li, (seg, lp) in enumerate(zip(layers, plan.layers)):
        a_in, a_out = keys.keys[li].alpha, keys.keys[li + 1].alpha
        assert seg.nnz <= a_in * a_out * lp.lowered.nnz
    assert sum(s.nnz for s in layers) > sum(lp.lowered.nnz for lp in plan.layers)
    theta = dom.flatten(lenet.state_dict())
    assert np.abs(dom.cipher.decrypt(dom.cipher.encrypt(theta)) - theta).max() <= 1e-12


def test_wrong_keys_do_not_decrypt(lenet, plan):
    ours = KeyNetDomain(lenet, LENET_INPUT, make_keys(plan, 1, alpha=2), plan=plan)
    theirs = KeyNetDomain(lenet, LENET_INPUT, make_keys(plan, 2, alpha=2), plan=plan)
    state = perturbed_state(lenet, 0)
    assert _max_rel(theirs.from_wire(ours.to_wire(state)), state) > 0.5


def test_per_client_keys_make_the_average_undecryptable(lenet, plan):
    doms = [KeyNetDomain(lenet, LENET_INPUT, make_keys(plan, s, alpha=1), plan=plan)
            for s in (1, 2)]
    states = [perturbed_state(lenet, s) for s in (1, 2)]
    mean_wire = 0.5 * doms[0].to_wire(states[0]) + 0.5 * doms[1].to_wire(states[1])
    mean_plain = {k: 0.5 * states[0][k] + 0.5 * states[1][k] for k in states[0]}
    assert _max_rel(doms[0].from_wire(mean_wire), mean_plain) > 0.5


def test_keys_from_bytes_give_the_same_ciphertext(lenet, plan):
    keys = make_keys(plan, 4, alpha=2)
    a = KeyNetDomain(lenet, LENET_INPUT, keys, plan=plan)
    b = KeyNetDomain(lenet, LENET_INPUT, KeySet.from_bytes(keys.to_bytes()), plan=plan)
    state = lenet.state_dict()
    assert torch.equal(a.to_wire(state), b.to_wire(state))


def test_mismatched_keys_are_rejected(lenet, plan):
    other = plan_network(torch.nn.Sequential(torch.nn.Linear(4, 2)), (4,))
    with pytest.raises(ValueError):
        KeyNetDomain(lenet, LENET_INPUT, make_keys(other, 0), plan=plan)
    with pytest.raises(ValueError):
        KeyNetDomain(lenet, LENET_INPUT, make_keys(plan, 0), space="channel")
