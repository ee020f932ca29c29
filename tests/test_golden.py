"""Golden path: ``scenarios/tiny.yaml`` end to end through the command line, as a user runs it."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_scenario_through_the_cli(tmp_path):
    out = tmp_path / "tiny"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "run_scenario.py", "scenarios/tiny.yaml", "--out", str(out)],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert proc.returncode == 0, proc.stderr
    # CPU seconds, not wall time: the test machine's cores are shared, so wall time is noise
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 30, f"tiny scenario used {cpu:.1f} CPU seconds"
    # stdout: the summary table, then where the tables went
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split()[:5] == ["scheme", "seed", "rounds", "status", "final_accuracy"]
    assert lines[1].split()[:4] == ["fedavg", "0", "2", "ok"]
    assert lines[-1] == f"tables written to {out}/"
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["scheme"]) == ["fedavg"] and summary["rounds"].iloc[0] == 2
    assert 0 <= summary["final_accuracy"].iloc[0] <= 1
    assert summary["sim_time_s"].iloc[0] > 0
    assert summary["bytes_up"].iloc[0] == pd.read_parquet(out / "rounds.parquet")["bytes_up"].sum()
    assert (out / "summary.txt").read_text().splitlines()[0] == lines[0]
