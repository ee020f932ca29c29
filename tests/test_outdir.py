"""Output safety: fedsim never replaces what it did not write, and swaps results in atomically."""

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
import yaml

from fedsim import outdir
from fedsim.cli import main
from fedsim.outdir import MARKER, OutputError, check_output, publish, recover

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "scenarios" / "tiny.yaml"


def _call(argv: list[str], capsys) -> tuple[int, list[str]]:
    code = main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


def _scenario(tmp: Path, **changes) -> Path:
    doc = {**yaml.safe_load(TINY.read_text()), "rounds": 1, **changes}
    path = tmp / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _refused(argv: list[str], capsys, *parts: str) -> None:
    code, err = _call(argv, capsys)
    assert code == 2 and len(err) == 1, err
    for part in parts:
        assert part in err[0], err[0]


def test_existing_file_is_refused_and_kept(tmp_path, capsys):
    victim = tmp_path / "notes.txt"
    victim.write_text("mine")
    _refused(["run", str(TINY), "--quiet", "--out", str(victim)], capsys, "is a file")
    assert victim.read_text() == "mine"


def test_folder_of_user_files_is_refused_and_kept(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("chapter 1")
    _refused(["run", str(TINY), "--quiet", "--out", str(tmp_path / "mine")], capsys,
             "not a fedsim run output folder", MARKER)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "chapter 1"


def test_folder_holding_the_scenario_is_refused(tmp_path, capsys):
    scenario = _scenario(tmp_path)
    (tmp_path / MARKER).write_text(json.dumps({"kind": "run"}))  # even one that looks like ours
    _refused(["run", str(scenario), "--quiet", "--out", str(tmp_path)], capsys, "holds the input")
    assert scenario.exists()


@pytest.mark.parametrize("name", ["../../victim", "/abs/dir", "..", ".hidden", "a/b", ""])
def test_scenario_name_must_be_plain(name, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scenario = _scenario(tmp_path, name=name)
    _refused(["run", str(scenario), "--quiet"], capsys, "name: must be a plain name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


@pytest.mark.parametrize("out", [".", "/", ".."])
def test_current_folder_and_parents_are_refused(out, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _refused(["run", str(TINY), "--quiet", "--out", out], capsys, "current folder or one of its")


def test_out_under_a_file_or_read_only_is_refused_before_simulating(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    t0 = time.perf_counter()
    _refused(["run", str(TINY), "--quiet", "--out", str(tmp_path / "f" / "out")], capsys,
             "is a file, so no folder can be created under it")
    _refused(["run", str(TINY), "--quiet", "--out", "/sys/fedsim_out"], capsys,
             "cannot write in /sys")
    assert time.perf_counter() - t0 < 5  # refused before any simulation
    assert (tmp_path / "f").read_text() == "x"


def test_rerun_replaces_own_folder_without_litter(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(TINY), "--quiet", "--set", "rounds=1", "--out", str(out)]) == 0
    assert main(["run", str(TINY), "--quiet", "--set", "rounds=2", "--out", str(out)]) == 0
    assert list(pd.read_parquet(out / "rounds.parquet")["round"]) == [0, 1, 2]
    assert json.loads((out / MARKER).read_text()) == {"kind": "run"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_exception_while_filling_keeps_old_folder(tmp_path):
    out = publish(tmp_path / "out", lambda d: (d / "v").write_text("1"), kind="run")

    def broken(d: Path) -> None:
        (d / "v").write_text("2")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        publish(out, broken, kind="run")
    assert (out / "v").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_one_atomic_file_writer_for_tables_and_caches(tmp_path, caplog):
    """cachefile.write_file_atomic is fedsim's one file writer: a failed write keeps the old file
    and leaves no litter; cache files use it too (and warn instead of raising)."""
    from fedsim.cachefile import read_cache, write_cache, write_file_atomic

    path = tmp_path / "t.csv"
    write_file_atomic(path, lambda p: p.write_text("old"))

    def broken(p: Path) -> None:
        p.write_text("half")
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError):
        write_file_atomic(path, broken)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["t.csv"]
    assert write_cache(tmp_path / "c" / "x.cache", "k", "key", b"payload")
    assert read_cache(tmp_path / "c" / "x.cache", "k", "key") == b"payload"
    (tmp_path / "file").write_text("")
    assert not write_cache(tmp_path / "file" / "x.cache", "k", "key", b"payload")
    assert "cannot write cache" in caplog.text


def test_fallback_swap_and_recovery_after_kill_between_renames(tmp_path, monkeypatch):
    out = publish(tmp_path / "out", lambda d: (d / "v").write_text("1"), kind="run")

    class NoExchange:  # a libc without renameat2
        pass
    monkeypatch.setattr(outdir.ctypes, "CDLL", lambda *a, **k: NoExchange())
    publish(out, lambda d: (d / "v").write_text("2"), kind="run")
    assert (out / "v").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # a process (pid 2**22 + 1 is above Linux's pid_max) killed between the two renames
    os.replace(out, tmp_path / ".out.fedsim-old-4194305-ab12")
    (tmp_path / ".out.fedsim-new-4194305-cd34").mkdir()
    recover(out)
    assert (out / "v").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_sweep_refuses_foreign_folder(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "data.csv").write_text("1,2")
    _refused(["sweep", str(TINY), "--quiet", "--out", str(tmp_path / "mine")], capsys,
             "not a fedsim sweep output folder")
    with pytest.raises(OutputError, match="not a fedsim run output folder"):
        check_output(tmp_path / "mine", "run")


_PUBLISHER = """
import sys
from pathlib import Path
from fedsim.outdir import check_output, publish
out = Path(sys.argv[1])
check_output(out, "run")
for i in range(10**6):
    def fill(d, i=i):
        for k in range(20):
            (d / f"part{k}").write_text(str(i) * 1000)
    publish(out, fill, kind="run")
"""


def _complete(out: Path) -> bool:
    parts = {(out / f"part{k}").read_text() for k in range(20)}
    return (out / MARKER).is_file() and len(parts) == 1


@pytest.mark.parametrize("kills", [20])
def test_kill_9_at_random_instants_leaves_old_or_new(kills, tmp_path):
    """A publisher replacing its folder in a loop is killed 20 times: the path is always whole."""
    out = tmp_path / "out"
    rng = random.Random(14)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(kills):
        proc = subprocess.Popen([sys.executable, "-c", _PUBLISHER, str(out)], env=env)
        deadline = time.monotonic() + 60
        while not (out / MARKER).exists() and time.monotonic() < deadline:  # a slow start
            time.sleep(0.01)
        time.sleep(rng.random() * 0.3)  # then a random instant of replacing it, again and again
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _complete(out)
    recover(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.slow
def test_kill_9_during_cli_run_over_previous_results(tmp_path):
    """`fedsim run` over earlier results, killed at 20 random instants, never loses them."""
    out = tmp_path / "out"
    scenario = _scenario(tmp_path)
    cmd = [sys.executable, "-m", "fedsim.cli", "run", str(scenario), "--quiet", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, env=env, check=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    duration = time.perf_counter() - t0
    rng = random.Random(14)
    for _ in range(20):
        proc = subprocess.Popen(cmd, env=env)
        time.sleep(rng.uniform(0.5, 1.0) * duration)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert len(pd.read_parquet(out / "rounds.parquet")) == 2 and (out / MARKER).is_file()
    subprocess.run(cmd, env=env, check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "s.yaml"]
