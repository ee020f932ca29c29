"""End-to-end engine checks: determinism, bandwidth, dropout/deadline/overcommit, exact bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsim import engine
from fedsim.config import RunConfig
from fedsim.devices import draw
from fedsim.hooks import EngineHooks
from fedsim.nodes.availability import Availability
from fedsim.rng import numpy_rng
from fedsim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
LENET5_PARAMS = 61_706


def config(name: str, *overrides: str) -> RunConfig:
    """The first run of ``scenarios/<name>.yaml`` with ``--set`` style overrides."""
    return load_scenario(ROOT / "scenarios" / f"{name}.yaml", list(overrides)).runs[0]


def without_host_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop host-time columns (wall-clock measurements), which legitimately differ between runs."""
    return frame.drop(columns=[c for c in frame.columns
                               if c.startswith("host_") or c.endswith("host_seconds")])


@pytest.fixture(scope="module")
def tiny():
    return engine.run(config("tiny"))


def test_same_seed_gives_identical_tables(tiny):
    again = engine.run(config("tiny"))
    for table in ("rounds", "clients", "messages", "histogram"):
        pd.testing.assert_frame_equal(without_host_columns(getattr(tiny, table)),
                                      without_host_columns(getattr(again, table)))
    assert tiny.rounds["test_accuracy"].notna().all()


def test_same_seed_identical_with_dropout_unavailability_overcommit():
    overrides = ("rounds=2", "availability.p_dropout=0.3", "availability.p_unavailable=0.2",
                 "selection.clients_per_round=2", "selection.overcommit=1.5",
                 "network.clients.uplink_bps={dist: lognormal, median: 5.0e+6, sigma: 1.0}")
    a, b = engine.run(config("tiny", *overrides)), engine.run(config("tiny", *overrides))
    for table in ("rounds", "clients", "messages"):
        pd.testing.assert_frame_equal(without_host_columns(getattr(a, table)),
                                      without_host_columns(getattr(b, table)))
    other_seed = engine.run(config("tiny", *overrides, "seed=1"))
    assert not np.allclose(a.rounds["test_loss"], other_seed.rounds["test_loss"])


def _run_recording_weights(cfg: RunConfig) -> tuple[engine.RunResult, list[str]]:
    """Run, and hash the global model's weights at every round (engine hook)."""
    hashes: list[str] = []

    def recording(rnd, state):
        h = hashlib.sha256()
        for tensor in state.values():
            h.update(tensor.numpy().tobytes())
        hashes.append(h.hexdigest())

    return engine.run(cfg, hooks=EngineHooks(on_global_model=recording)), hashes


def test_halving_uplink_bandwidth_slows_rounds_but_not_learning():
    short = ("rounds=2", "data.train_limit=600", "data.test_limit=300")
    full = config("quickstart", *short)
    half = config("quickstart", *short, f"network.clients.uplink_bps={full.network.clients.uplink_bps / 2}")
    base, base_w = _run_recording_weights(full)
    slow, slow_w = _run_recording_weights(half)

    dur = lambda r: (r.rounds["sim_time_end"] - r.rounds["sim_time_start"]).to_numpy()[1:]
    assert (dur(slow) > dur(base)).all(), (dur(base), dur(slow))
    ups = lambda r: r.clients["upload_s"].to_numpy()
    assert (ups(slow) > ups(base)).all()
    # transmission time (upload minus the 20 ms latency) doubles exactly on a 5 -> 2.5 Mbit/s uplink
    np.testing.assert_allclose(ups(slow) - 0.02, 2 * (ups(base) - 0.02), rtol=1e-9)

    assert len(base_w) == 3 and base_w == slow_w  # identical global weights at every round
    pd.testing.assert_series_equal(base.rounds["test_accuracy"], slow.rounds["test_accuracy"])
    pd.testing.assert_series_equal(base.rounds["test_loss"], slow.rounds["test_loss"])
    pd.testing.assert_series_equal(base.clients["train_loss"], slow.clients["train_loss"])


def test_dropout_is_counted_and_rounds_complete():
    res = engine.run(config("tiny", "rounds=4", "availability.p_dropout=0.4"))
    rd = res.rounds.set_index("round")
    assert list(rd.index) == [0, 1, 2, 3, 4]
    assert rd["n_dropout"].sum() > 0
    assert (rd["n_dropped"] == rd["n_selected"] - rd["n_completed"]).all()
    dropped = res.clients[res.clients["status"] == "dropout"]
    assert len(dropped) == rd["n_dropout"].sum()
    assert (dropped["bytes_up"] == 0).all()
    aggregated = res.clients[res.clients["status"] == "aggregated"].groupby("round").size()
    assert (aggregated.reindex(rd.index[1:], fill_value=0) == rd["n_completed"].iloc[1:]).all()
    # the draws are those of the seeded availability streams
    avail = Availability(res.config.seed, 0.0, 0.4)
    expected = {(r, c) for r in range(1, 5) for c in range(4) if avail.drops_out(c, r)}
    assert set(zip(dropped["round"], dropped["client"])) == expected


def test_unavailable_clients_are_not_selected():
    res = engine.run(config("tiny", "rounds=4", "availability.p_unavailable=0.5"))
    avail = Availability(res.config.seed, 0.5, 0.0)
    for rnd, group in res.clients.groupby("round"):
        online = {c for c in range(4) if avail.available(c, rnd)}
        assert set(group["client"]) == online
    rd = res.rounds[res.rounds["round"] > 0]
    assert rd["n_selected"].min() < 4
    assert len(rd) == 4


def _uplinks(cfg: RunConfig) -> np.ndarray:
    """The per-client uplink rates the engine draws (same stream, same order)."""
    return draw(cfg.network.clients.uplink_bps, cfg.data.num_clients,
                numpy_rng(cfg.seed, "network", "links"))


def test_deadline_drops_a_straggler():
    slow_up = "network.clients.uplink_bps={dist: choice, values: [1.0e+4, 5.0e+6]}"
    cfg = config("tiny", slow_up, "selection.deadline_s=5")
    ups = _uplinks(cfg)
    slow = set(np.flatnonzero(ups < 1e5).tolist())
    assert 0 < len(slow) < 4  # a client whose 247 kB upload takes ~200 s
    res = engine.run(cfg)
    rd = res.rounds[res.rounds["round"] > 0]
    np.testing.assert_allclose(rd["sim_time_end"] - rd["sim_time_start"], 5.0)
    assert (rd["n_late"] == len(slow)).all()
    assert (rd["n_completed"] == 4 - len(slow)).all()
    used = set(res.clients.loc[res.clients["status"] == "aggregated", "client"])
    assert used == set(range(4)) - slow
    assert res.rounds["test_accuracy"].notna().all()

    no_deadline = engine.run(config("tiny", slow_up, "rounds=1"))
    assert no_deadline.rounds["sim_time_end"].iloc[-1] > 100  # it waits for the straggler


def test_overcommit_keeps_the_first_m_updates():
    cfg = config("tiny", "network.clients.uplink_bps={dist: uniform, low: 1.0e+6, high: 2.0e+7}",
                 "selection.clients_per_round=2", "selection.overcommit=2")
    ups = _uplinks(cfg)
    fastest = set(np.argsort(-ups)[:2].tolist())
    res = engine.run(cfg)
    rd = res.rounds[res.rounds["round"] > 0]
    assert (rd["n_selected"] == 4).all() and (rd["n_completed"] == 2).all()
    assert (rd["n_surplus"] == 2).all() and (rd["n_dropped"] == 2).all()
    for _, group in res.clients.groupby("round"):
        assert set(group.loc[group["status"] == "aggregated", "client"]) == fastest
        assert set(group["status"]) <= {"aggregated", "discarded"}


def test_message_bytes_are_exact(tiny):
    assert tiny.info["model_params"] == LENET5_PARAMS
    msgs = tiny.messages
    down = msgs[msgs["kind"] == "model_down"]
    assert len(down) == 2 * 4
    assert (down["bytes"] == 8 + 4 * LENET5_PARAMS).all()
    up = msgs[msgs["kind"] == "update_up"].groupby("round")["bytes"].sum()
    rd = tiny.rounds.set_index("round")
    assert (rd.loc[up.index, "bytes_up"] == up).all()
    assert rd.loc[0, "bytes_up"] == 0 and len(up) == 2
    assert (rd["bytes_down"].iloc[1:] == 4 * (8 + 4 * LENET5_PARAMS)).all()
    assert up.sum() == tiny.clients["bytes_up"].sum()


def test_compute_time_is_flops_over_device_speed(tiny):
    """flops timing: compute_s = samples x train FLOPs per sample / device FLOP/s, exactly."""
    clients = tiny.clients
    speed = 2e10  # phone_midrange
    expected = clients["samples"] * tiny.info["train_flops_per_sample"] / speed
    np.testing.assert_allclose(clients["compute_s"], expected, rtol=1e-12)


def test_measured_timing_scales_host_seconds():
    """measured timing: compute_s = host training seconds x measured_scale."""
    res = engine.run(config("tiny", "compute.timing=measured", "compute.measured_scale=3.0"))
    np.testing.assert_allclose(res.clients["compute_s"], 3.0 * res.clients["host_train_s"],
                               rtol=1e-12)
    assert (res.clients["compute_s"] > 0).all()
