"""Differential privacy: the accountant against dp-accounting's published values, clipping,
local and central noise, refused combinations, and a DP run's determinism and epsilon column."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from dp_accounting.rdp import rdp_privacy_accountant

from fedsim import engine
from fedsim.codecs.identity import IdentityCodec
from fedsim.privacy import CentralNoise, ClippedCodec, epsilon_by_round
from fedsim.scenario import ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parents[1]
DP = ("privacy.kind=dp_fedavg", "privacy.noise_multiplier=0.5", "privacy.clip_norm=0.05",
      "selection.weighting=uniform")


def config(*overrides: str):
    return load_scenario(ROOT / "scenarios" / "tiny.yaml", list(overrides)).runs[0]


def without_host_columns(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in frame.columns
                               if c.startswith("host_") or c.endswith("host_seconds")])


# -- accountant vs the library's published examples ------------------------------------------
def test_accountant_matches_published_gaussian_example():
    # dp-accounting 0.6.0, dp_accounting/rdp/rdp_privacy_accountant_test.py,
    # test_compute_epsilon_delta_gaussian: "noise multiplier is chosen to obtain exactly
    # (1,1e-6)-DP": q = 1, z = 4.530877117, orders 1.000..99.999 -> epsilon 1 (7 places).
    orders = [0.001 * i for i in range(1000, 100000)]
    eps = epsilon_by_round([1], noise_multiplier=4.530877117, sampling_prob=1.0, delta=1e-6,
                           orders=orders)
    assert eps == [pytest.approx(1.0, abs=1e-7)]


def test_accountant_matches_published_poisson_sampled_rdp():
    # dp-accounting 0.6.0, rdp_privacy_accountant_test.py, test_compute_rdp_poisson_sampled_
    # gaussian: q = 0.01, z = 2.5, 50 compositions; the RDP it pins at orders
    # [1.5, 2.5, 5, 50, 100] (rtol 1e-4). Epsilon from those published values must be ours.
    orders = [1.5, 2.5, 5, 50, 100]
    published = [6.70579741e-04, 1.08548710e-03, 2.18075656e-03, 2.38460375e-02, 1.67416308e02]
    expected, _ = rdp_privacy_accountant.compute_epsilon(orders, published, 1e-5)
    eps = epsilon_by_round([0, 50], noise_multiplier=2.5, sampling_prob=0.01, delta=1e-5,
                           orders=orders)
    assert eps[0] == 0.0
    assert eps[1] == pytest.approx(expected, rel=1e-3)
    assert eps[1] == pytest.approx(0.1588, abs=1e-4)  # (0.159, 1e-5)-DP after 50 rounds


def test_epsilon_grows_with_rounds_and_falls_with_noise():
    low = epsilon_by_round([1, 2, 10], noise_multiplier=1.0, sampling_prob=0.1, delta=1e-5)
    high = epsilon_by_round([1, 2, 10], noise_multiplier=2.0, sampling_prob=0.1, delta=1e-5)
    assert low[0] < low[1] < low[2]
    assert all(h < w for h, w in zip(high, low))
    assert epsilon_by_round([3], noise_multiplier=0.0, sampling_prob=1.0, delta=1e-5) == [math.inf]


# -- clipping and noise ------------------------------------------------------------------------
def test_clipping_bounds_the_norm_and_leaves_small_updates_alone():
    codec = ClippedCodec(IdentityCodec(), clip_norm=1.0, noise_std=0.0)
    big = torch.full((100,), 0.5)  # norm 5
    enc = codec.encode(big, seed=1, slot=0)
    out = codec.decode(enc.payload, numel=100)
    assert float(out.norm()) == pytest.approx(1.0, rel=1e-6)
    torch.testing.assert_close(out, big / 5)
    assert enc.metrics["dp_update_norm"] == pytest.approx(5.0) and enc.metrics["dp_clipped"] == 1.0
    small = torch.full((100,), 0.01)
    torch.testing.assert_close(codec.decode(codec.encode(small, seed=1, slot=0).payload,
                                            numel=100), small)


def test_local_noise_has_std_z_c_and_is_seeded_by_the_client():
    codec = ClippedCodec(IdentityCodec(), clip_norm=2.0, noise_std=0.5 * 2.0)
    zero = torch.zeros(200_000)
    a = codec.decode(codec.encode(zero, seed=7, slot=0).payload, numel=zero.numel())
    b = codec.decode(codec.encode(zero, seed=7, slot=3).payload, numel=zero.numel())
    c = codec.decode(codec.encode(zero, seed=8, slot=0).payload, numel=zero.numel())
    assert float(a.std()) == pytest.approx(1.0, rel=0.01) and abs(float(a.mean())) < 0.01
    torch.testing.assert_close(a, b)  # the stream is the client's seed's, not the slot's
    assert not torch.equal(a, c)


def test_central_noise_uses_a_fixed_denominator_and_a_per_round_stream():
    mean = torch.full((50_000,), 0.2)
    exact = CentralNoise(0.0, 1.0, expected_clients=10, seed=3)
    torch.testing.assert_close(exact.release(1, mean, 5), mean * 5 / 10)  # sum / m, not / n
    noisy = CentralNoise(2.0, 0.5, expected_clients=10, seed=3)
    r1 = noisy.release(1, mean, 10)
    assert float((r1 - mean).std()) == pytest.approx(2.0 * 0.5 / 10, rel=0.02)
    torch.testing.assert_close(noisy.release(1, mean, 10), r1)
    assert not torch.equal(noisy.release(2, mean, 10), r1)


# -- configuration -----------------------------------------------------------------------------
@pytest.mark.parametrize(("overrides", "message"), [
    (("privacy.kind=dp_fedavg", "privacy.noise_multiplier=1", "privacy.clip_norm=1"),
     "needs selection.weighting: uniform"),
    (DP + ("encryption.kind=keynet",), "cannot be combined with KeyNet"),
    (("privacy.kind=local_dp", "privacy.noise_multiplier=1", "privacy.clip_norm=1",
      "encryption.kind=keynet"), "cannot be combined with KeyNet"),
    (DP + ("codec={kind: enn}",), "cannot be combined with codec 'enn'"),
    (("privacy.kind=local_dp", "privacy.noise_multiplier=-1", "privacy.clip_norm=1"),
     "privacy.noise_multiplier"),
    (("privacy.kind=local_dp", "privacy.noise_multiplier=1", "privacy.clip_norm=0"),
     "privacy.clip_norm"),
])
def test_meaningless_privacy_settings_are_refused(overrides, message):
    with pytest.raises(ScenarioError, match=message):
        config(*overrides)


# -- end to end ----------------------------------------------------------------------------------
def test_dp_fedavg_run_is_deterministic_and_reports_epsilon():
    a, b = engine.run(config(*DP)), engine.run(config(*DP))
    for table in ("rounds", "clients", "messages"):
        pd.testing.assert_frame_equal(without_host_columns(getattr(a, table)),
                                      without_host_columns(getattr(b, table)))
    eps = a.rounds["dp_epsilon"].to_numpy()
    expected = epsilon_by_round([0, 1, 2], noise_multiplier=0.5, sampling_prob=1.0, delta=1e-5)
    np.testing.assert_allclose(eps, expected)
    assert a.info["dp_epsilon"] == eps[-1]
    assert (a.clients["dp_update_norm"] > 0).all()
    # the noise is the server's: the plain run with the same clipping differs only by it
    clip_only = engine.run(config(*DP[:1], "privacy.noise_multiplier=0", *DP[2:]))
    assert not np.allclose(clip_only.rounds["test_loss"], a.rounds["test_loss"])
    assert clip_only.info["dp_epsilon"] == math.inf


def test_local_dp_noise_is_on_the_wire_and_epsilon_counts_uploads():
    res = engine.run(config("privacy.kind=local_dp", "privacy.noise_multiplier=0.2",
                            "privacy.clip_norm=0.05", "rounds=2"))
    expected = epsilon_by_round([0, 1, 2], noise_multiplier=0.2, sampling_prob=1.0, delta=1e-5)
    np.testing.assert_allclose(res.rounds["dp_epsilon"], expected)
