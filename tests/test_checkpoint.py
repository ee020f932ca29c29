"""``--checkpoint-every`` / ``--resume``: a run killed with SIGKILL at a random round resumes and
writes tables identical to an uninterrupted run (host-time columns aside)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from fedsim.cachefile import read_cache
from fedsim.checkpoint import check_resumable
from fedsim.cli import main
from fedsim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _saved_round(folder: Path) -> int:
    files = list(folder.glob("*.round")) if folder.is_dir() else []
    payload = read_cache(files[0], "checkpoint", json.loads(
        files[0].read_bytes().split(b"\n")[1])["key"]) if files else None
    return json.loads(payload)["round"] if payload else 0


def _same_tables(a: Path, b: Path) -> None:
    for table in ("rounds", "clients", "messages", "histogram", "summary"):
        x, y = pd.read_csv(a / f"{table}.csv"), pd.read_csv(b / f"{table}.csv")
        cols = [c for c in x.columns if "host" not in c]
        assert list(x.columns) == list(y.columns)
        pd.testing.assert_frame_equal(x[cols], y[cols], check_exact=True)


def _kill_and_resume(tmp: Path, scenario: str, rounds: int, seed: int) -> int:
    argv = ["run", scenario, "--quiet", "--set", f"rounds={rounds}"]
    cmd = [sys.executable, "-m", "fedsim.cli", *argv]
    assert main([*argv, "--out", str(tmp / "ref")]) == 0
    kill_at = random.Random(seed).randint(1, rounds - 2)
    folder = tmp / ".out.fedsim-checkpoint"
    proc = subprocess.Popen([*cmd, "--checkpoint-every", "1", "--out", str(tmp / "out")], env=ENV)
    while _saved_round(folder) < kill_at and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_after = _saved_round(folder)
    assert killed_after >= kill_at and not (tmp / "out").exists()
    assert main([*argv, "--checkpoint-every", "1", "--resume", "--out", str(tmp / "out")]) == 0
    _same_tables(tmp / "out", tmp / "ref")
    assert sorted(p.name for p in tmp.iterdir()) == ["out", "ref"]  # checkpoints removed
    return killed_after


def test_resume_after_kill_9_gives_identical_tables(tmp_path):
    _kill_and_resume(tmp_path, str(ROOT / "scenarios" / "tiny.yaml"), 5, seed=14)


@pytest.mark.slow
def test_resume_30_round_quickstart_after_kill_9(tmp_path):
    killed = _kill_and_resume(tmp_path, str(ROOT / "scenarios" / "quickstart.yaml"), 30, seed=3)
    print(f"killed after round {killed} of 30")


def test_resume_without_checkpoint_and_unsupported_schemes_are_one_line(tmp_path, capsys):
    tiny = str(ROOT / "scenarios" / "tiny.yaml")
    assert main(["run", tiny, "--resume", "--out", str(tmp_path / "o")]) == 2
    assert "no checkpoints at" in capsys.readouterr().err
    assert main(["run", tiny, "--checkpoint-every", "2", "--set", "selection.deadline_s=1",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "selection.deadline_s" in err[0]
    cfg = load_scenario(tiny, ["encryption={kind: keynet}"]).runs[0]
    with pytest.raises(ValueError, match="encryption"):
        check_resumable(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
