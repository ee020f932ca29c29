"""Encrypted runs end where plaintext runs end: same global weights (1e-5), same test accuracy."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from keynet_nets import lenet_run_config

from fedsim import engine
from fedsim.config import RunConfig
from fedsim.hooks import EngineHooks

DATA_ROOT = os.environ.get("FEDSIM_DATA", str(Path(__file__).resolve().parents[3] / "shared" / "datasets"))


def _config(**over) -> RunConfig:
    return lenet_run_config(**{"rounds": 3, "train_limit": 1000, "test_limit": 500, **over})


def _assert_same_run(a, b):
    (ra, sa), (rb, sb) = a, b
    diff = max((sa[k] - sb[k]).abs().max().item() for k in sa if sa[k].is_floating_point())
    assert diff < 1e-5, f"global weights differ by {diff:.3g}"
    acc_a, acc_b = ra.rounds["test_accuracy"].to_numpy(), rb.rounds["test_accuracy"].to_numpy()
    assert abs(acc_a[-1] - acc_b[-1]) < 1e-3
    assert acc_a[-1] > acc_a[0]  # it did learn
    return diff


@pytest.mark.parametrize("encryption", [
    {"kind": "keynet"},
    {"kind": "keynet", "key_delivery": "seed", "init_by": "server"},
    {"kind": "keynet", "space": "channel"},
    {"kind": "keynet", "alpha": 4},
], ids=["lowered-material-client", "lowered-seed-server", "channel", "alpha4"])
def test_fedavg_encrypted_equals_plaintext(run_final, encryption):
    plain = run_final(_config())
    enc = run_final(_config(encryption=encryption))
    _assert_same_run(plain, enc)
    assert enc[0].info["eval_outside_protocol"] is True


def test_fedpaq_encrypted_equals_plaintext_with_same_quantizer_seeds(run_final):
    fedpaq = {"codec": {"kind": "qsgd", "levels": 4, "bucket_size": 512},
              "selection": {"weighting": "uniform"},
              "training": {"local_epochs": None, "local_steps": 10}}
    plain = run_final(_config(**fedpaq))
    enc = run_final(_config(**fedpaq, encryption={"kind": "keynet"}))
    _assert_same_run(plain, enc)
    # the quantizer ran on the plaintext update: same QSGD bytes as the plaintext run, but the
    # wire carries the encrypted dequantized update as fp32 ciphertext
    pc, ec = plain[0].clients, enc[0].clients
    assert (ec["bytes_plain_codec"].to_numpy() == pc["bytes_up"].to_numpy()).all()
    assert (ec["bytes_up"] == enc[0].info["cipher_model_bytes"]).all()
    np.testing.assert_allclose(ec["plain_rel_error"], pc["rel_error"], rtol=1e-5)


@pytest.mark.slow
def test_mobilenet_v2_cifar10_channel_keys_equal_plaintext():
    """MobileNetV2 (width 0.5) on 1,000 CIFAR-10 images, channel-space keys, 2 rounds.

    With power-of-two gains and a client-encrypted initial model, encryption is exact in floating
    point, so every global model of the encrypted run equals the plaintext run's.
    """
    states: dict[str, list] = {}
    over = {"rounds": 2,
            "data": {"dataset": "cifar10", "data_root": DATA_ROOT, "train_limit": 1000,
                     "test_limit": 500},
            "model": {"kind": "mobilenet_v2", "width_mult": 0.5},
            "training": {"local_epochs": 1, "batch_size": 32, "lr": 0.05}}
    torch.set_num_threads(1)
    results = {}
    for current, enc in [("plain", {"kind": "none"}),
                         ("keynet", {"kind": "keynet", "space": "channel",
                                     "gains": "power_of_two", "init_by": "client"})]:
        states[current] = []
        results[current] = engine.run(_config(**over, encryption=enc), hooks=EngineHooks(
            on_global_model=lambda rnd, state, run=current: states[run].append(state)))
    assert len(states["plain"]) == len(states["keynet"]) == 3
    for a, b in zip(states["plain"], states["keynet"], strict=True):
        diff = max((a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point())
        assert diff < 1e-5
    assert results["keynet"].info["cipher_numel"] == results["keynet"].info["plain_numel"]
    acc = [r.rounds["test_accuracy"].to_numpy() for r in results.values()]
    assert np.abs(acc[0] - acc[1]).max() < 1e-3
