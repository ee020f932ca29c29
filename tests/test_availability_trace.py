"""Availability traces: the file format and its errors, sessions over simulated time, and
clients going offline mid-round (aborted uploads with their partial bytes counted)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsim import engine
from fedsim.nodes.traces import OnlineTrace, TraceError, diurnal, load_trace
from fedsim.rng import numpy_rng
from fedsim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
FULL_UPLOAD = 8 + 4 * 61_706  # LeNet-5 fp32 update, bytes
UPLINK_BPS = 5.0e6  # tiny.yaml


def config(*overrides: str):
    return load_scenario(ROOT / "scenarios" / "tiny.yaml", list(overrides)).runs[0]


def without_host_columns(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in frame.columns
                               if c.startswith("host_") or c.endswith("host_seconds")])


# -- sessions -----------------------------------------------------------------------------------
def test_online_until_finds_the_session_end_and_wraps_around_the_period():
    trace = OnlineTrace({0: ((10.0, 20.0), (30.0, 40.0)), 1: ((0.0, 5.0), (90.0, 100.0)),
                         2: ((0.0, 100.0),)}, period_s=100.0)
    assert trace.online_until(0, 12.0) == 20.0
    assert trace.online_until(0, 25.0) == 25.0  # offline: now
    assert trace.online_until(0, 20.0) == 20.0  # [start, end): offline at its end
    assert trace.online_until(0, 135.0) == 140.0  # the next period
    assert trace.online_until(1, 95.0) == 105.0  # [90, 100) runs on into [0, 5) of the next
    assert trace.online_until(2, 1234.5) == math.inf
    once = OnlineTrace({0: ((10.0, 20.0),)})
    assert once.online_until(0, 15.0) == 20.0 and once.online_until(0, 115.0) == 115.0


def test_fedscale_shape_and_yaml_read_like_interval_lists(tmp_path):
    ours = tmp_path / "ours.json"
    ours.write_text(json.dumps({"clients": {"0": [[0, 5], [5, 8], [10, 20]], "1": [[1, 2]]}}))
    fedscale = tmp_path / "fedscale.yaml"
    fedscale.write_text("clients:\n  0: {active: [0, 10], inactive: [8, 20]}\n"
                        "  1: {active: [1], inactive: [2]}\n  7: [[0, 1]]\n")
    a, b = load_trace(ours, 2), load_trace(fedscale, 2)
    assert a == b
    assert a.sessions[0] == ((0.0, 8.0), (10.0, 20.0))  # touching sessions merged


@pytest.mark.parametrize(("doc", "message"), [
    ({"clients": {"0": [[0, 5]]}}, r"client 1 missing \(the run has clients 0..1\)"),
    ({"clients": {"0": [[0, 5]], "1": [[5, 3]]}}, r"client 1: interval \[5.0, 3.0\] needs"),
    ({"clients": {"0": [[0, 5], [4, 6]], "1": []}}, "client 0: interval .* starts before"),
    ({"clients": {"0": [[0, "x"]], "1": []}}, r"client 0: interval \[0, 'x'\] is not"),
    ({"clients": {"0": {"active": [0]}, "1": []}}, "client 0: needs 'active' and 'inactive'"),
    ({"period_s": 10, "clients": {"0": [[0, 11]], "1": []}}, "client 0: .* ends after period_s"),
    ({"period_s": 0, "clients": {}}, "period_s must be a positive number"),
    ({"clients": {}, "extra": 1}, "unknown key"),
    ([1, 2], "expected a mapping"),
])
def test_bad_traces_name_the_file_and_the_client(tmp_path, doc, message):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(TraceError, match=f"availability.trace {path}: {message}"):
        load_trace(path, 2)


def test_missing_trace_file_is_a_one_line_error(tmp_path):
    with pytest.raises(TraceError, match="cannot read"):
        load_trace(tmp_path / "nope.yaml", 2)


def test_diurnal_sessions_cover_the_online_fraction_and_are_seeded():
    trace = diurnal(50, 100.0, 0.3, numpy_rng(0, "availability", "diurnal"))
    for ivs in trace.sessions.values():
        assert sum(e - s for s, e in ivs) == pytest.approx(30.0)
    assert trace == diurnal(50, 100.0, 0.3, numpy_rng(0, "availability", "diurnal"))
    online = [sum(trace.online_until(c, t) > t for c in range(50)) for t in np.arange(0, 100, 5)]
    assert 5 < np.mean(online) < 25  # about 30% online at any time


def test_shipped_example_trace_loads():
    trace = load_trace(ROOT / "scenarios" / "traces" / "diurnal_100.json", 100)
    assert len(trace.sessions) == 100 and trace.period_s is not None


# -- in a run ------------------------------------------------------------------------------------
def _upload_starts(res: engine.RunResult, rnd: int) -> pd.Series:
    c = res.clients[res.clients["round"] == rnd].set_index("client")
    return c["t_start"] + c["download_s"] + c["compute_s"] + c["crypto_s"]


def test_clients_going_offline_mid_upload_drop_out_with_partial_bytes(tmp_path):
    base = ("data.num_clients=10", "rounds=2")
    reference = engine.run(config(*base))
    starts = _upload_starts(reference, 1)
    # 30% of round 1's clients (0, 1, 2) go offline 0.2 s into their 0.4 s upload, for good
    offline = {c: float(starts[c]) + 0.2 for c in (0, 1, 2)}
    doc = {"clients": {str(c): [[0, offline.get(c, 1e9)]] for c in range(10)}}
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(doc))
    res = engine.run(config(*base, f"availability.trace={path}"))

    rd = res.rounds.set_index("round")
    assert list(rd.index) == [0, 1, 2]  # every round completes
    assert (rd.loc[1, "n_selected"], rd.loc[1, "n_completed"], rd.loc[1, "n_dropout"]) == (10, 7, 3)
    assert (rd.loc[2, "n_selected"], rd.loc[2, "n_completed"]) == (7, 7)  # offline: not selected
    dropped = res.clients[res.clients["status"] == "aborted"].set_index("client")
    assert sorted(dropped.index) == [0, 1, 2] and (dropped["round"] == 1).all()
    sent = dropped["bytes_up"]
    assert ((sent > 0) & (sent < FULL_UPLOAD)).all()
    for c in (0, 1, 2):  # 0.2 s at the client's 5 Mbit/s uplink
        assert sent[c] == pytest.approx(0.2 * UPLINK_BPS / 8, abs=1)
    msgs = res.messages[res.messages["status"] == "aborted"]
    assert sorted(msgs["src"]) == ["client/0", "client/1", "client/2"]
    assert dict(zip(msgs["src"], msgs["bytes"])) == {f"client/{c}": sent[c] for c in (0, 1, 2)}
    assert msgs["bytes"].sum() == sent.sum()
    np.testing.assert_allclose(msgs["t_arrive"].sort_values(), sorted(offline.values()))
    # the rounds table counts the partial bytes with the delivered ones
    assert rd.loc[1, "bytes_up"] == 7 * FULL_UPLOAD + sent.sum()


def test_offline_clients_are_never_selected_and_runs_are_deterministic(tmp_path):
    path = tmp_path / "trace.yaml"
    path.write_text("clients:\n  0: [[0, 1000]]\n  1: [[1000, 2000]]\n"
                    "  2: [[0, 1000]]\n  3: [[0, 1000]]\n")
    overrides = (f"availability.trace={path}", "rounds=3")
    a, b = engine.run(config(*overrides)), engine.run(config(*overrides))
    assert 1 not in set(a.clients["client"])
    assert (a.rounds["n_selected"].iloc[1:] == 3).all()
    for table in ("rounds", "clients", "messages"):
        pd.testing.assert_frame_equal(without_host_columns(getattr(a, table)),
                                      without_host_columns(getattr(b, table)))


def test_diurnal_run_selects_only_online_clients():
    res = engine.run(config("data.num_clients=10", "rounds=3",
                            "availability.diurnal={period_s: 4.0, online_fraction: 0.5}"))
    trace = diurnal(10, 4.0, 0.5, numpy_rng(0, "availability", "diurnal"))
    for rnd, group in res.clients.groupby("round"):
        t0 = res.rounds.set_index("round").loc[rnd, "sim_time_start"]
        online = {c for c in range(10) if trace.online_until(c, t0) > t0}
        assert set(group["client"]) == online
