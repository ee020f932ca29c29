"""The ``fedsim run`` command line: bad input gives exit 2 and one clear line; good input writes tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fedsim.cli import main
from fedsim.outdir import MARKER

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "scenarios" / "tiny.yaml")
SCALE_100K = str(ROOT / "scenarios" / "scale_100k.yaml")


def _call(argv: list[str]) -> int:
    """Run the CLI in-process; argparse errors exit via SystemExit."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def _write(tmp: Path, name: str, content: bytes) -> str:
    path = tmp / name
    path.write_bytes(content)
    return str(path)


def _corrupt_mnist(tmp: Path) -> str:
    raw = tmp / "corrupt" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"\x00\x01\x02 not an idx file")
    return str(tmp / "corrupt")


# id -> (argv builder taking tmp_path, substrings the error line must contain)
CASES = {
    "unknown_key": (lambda t: ["run", TINY, "--set", "roundz=3"], [TINY, "roundz", "unknown key"]),
    "unknown_key_in_scheme": (lambda t: ["run", TINY, "--set", "schemes.fedavg.training.lr_x=1"],
                              [TINY, "schemes.fedavg.training.lr_x", "unknown key"]),
    "wrong_type": (lambda t: ["run", TINY, "--set", "rounds=abc"], [TINY, "rounds", "integer", "'abc'"]),
    "out_of_range": (lambda t: ["run", TINY, "--set", "rounds=0"], [TINY, "rounds", "greater than", "0"]),
    "missing_file": (lambda t: ["run", str(t / "nope.yaml")], ["nope.yaml", "no such scenario file"]),
    "directory_not_file": (lambda t: ["run", str(t)], ["no such scenario file"]),
    "yaml_syntax": (lambda t: ["run", _write(t, "bad.yaml", b"rounds: [1\n")],
                    ["bad.yaml", "YAML syntax error", "line 2"]),
    "binary_file": (lambda t: ["run", _write(t, "bin.yaml", b"\xff\xfe\x00\x81rounds")],
                    ["bin.yaml", "cannot parse YAML"]),
    "empty_file": (lambda t: ["run", _write(t, "empty.yaml", b"")], ["empty.yaml", "empty"]),
    "top_level_list": (lambda t: ["run", _write(t, "list.yaml", b"- a\n- b\n")],
                       ["list.yaml", "top level must be a mapping", "list"]),
    "unknown_dataset": (lambda t: ["run", TINY, "--set", "data.dataset=imagenet"],
                        [TINY, "data.dataset", "'imagenet'", "mnist"]),
    "unknown_model": (lambda t: ["run", TINY, "--set", "model.kind=resnet"],
                      [TINY, "model.kind", "'resnet'", "lenet5"]),
    "set_without_equals": (lambda t: ["run", TINY, "--set", "rounds"], ["--set", "rounds", "KEY.PATH=VALUE"]),
    "set_bad_yaml_value": (lambda t: ["run", TINY, "--set", "rounds=[1"], ["--set", "rounds", "not valid YAML"]),
    "set_into_value": (lambda t: ["run", TINY, "--set", "rounds.x=1"],
                       ["--set", "rounds.x=1", "rounds is a value, not a section"]),
    "negative_bandwidth": (lambda t: ["run", TINY, "--set", "network.clients.uplink_bps=-5"],
                           [TINY, "network.clients.uplink_bps", "greater than 0", "-5"]),
    "epochs_and_steps": (lambda t: ["run", TINY, "--set", "training.local_steps=5"],
                         [TINY, "training", "local_epochs", "local_steps"]),
    "clients_per_round_too_big": (lambda t: ["run", TINY, "--set", "selection.clients_per_round=9"],
                                  [TINY, "selection.clients_per_round", "(9)", "num_clients (4)"]),
    "unknown_scheme_flag": (lambda t: ["run", TINY, "--scheme", "fedprox"],
                            ["--scheme", "fedprox", "fedavg"]),
    "unknown_codec_kind": (lambda t: ["run", TINY, "--set", "codec.kind=zip"],
                           [TINY, "codec.kind", "'zip'", "qsgd"]),
    "codec_without_kind": (lambda t: ["run", TINY, "--set", "codec.levels=3"],
                           [TINY, "codec.kind", "missing"]),
    "qsgd_levels_0": (lambda t: ["run", TINY, "--set", "codec={kind: qsgd, levels: 0}"],
                      [TINY, "codec.levels", "greater than or equal to 1", "0"]),
    "partition_missing_k": (lambda t: ["run", TINY, "--set", "data.partition.kind=classes_per_client"],
                            [TINY, "data.partition", "needs classes_per_client"]),
    "partition_too_few_classes": (lambda t: ["run", TINY, "--set", "data.partition.kind=classes_per_client",
                                             "--set", "data.partition.classes_per_client=1"],
                                  [TINY, "data", "partition", "classes_per_client", "fewer than the 10"]),
    "classes_per_client_too_big": (lambda t: ["run", TINY, "--set", "data.partition.kind=classes_per_client",
                                              "--set", "data.partition.classes_per_client=11"],
                                   [TINY, "data", "partition", "between 1 and", "got 11"]),
    "unknown_device": (lambda t: ["run", TINY, "--set", "compute.device=toaster"],
                       [TINY, "compute.device", "unknown device profile", "'toaster'"]),
    "mnist_root_missing": (lambda t: ["run", TINY, "--set", "data.dataset=mnist",
                                      "--set", f"data.data_root={t / 'no_such_root'}"],
                           [TINY, "data", "mnist", "no_such_root", "no MNIST files"]),
    "mnist_corrupt": (lambda t: ["run", TINY, "--set", "data.dataset=mnist",
                                 "--set", f"data.data_root={_corrupt_mnist(t)}"],
                      [TINY, "data", "mnist", "corrupt", "cannot read MNIST"]),
    "min_samples_per_client": (lambda t: ["run", TINY, "--set", "data.min_samples_per_client=101"],
                               [TINY, "data", "min_samples_per_client", "4 of 4 clients",
                                "fewer than 101"]),
    "synthetic_needs_mlp": (lambda t: ["run", TINY, "--set", "data.dataset=synthetic"],
                            [TINY, "synthetic", "'mlp'", "'lenet5'"]),
    "natural_needs_synthetic": (lambda t: ["run", TINY, "--set", "data.partition.kind=natural"],
                                [TINY, "data", "natural", "synthetic"]),
    "synthetic_too_few_samples": (lambda t: ["run", SCALE_100K, "--set", "data.num_clients=20", "--set", "selection.clients_per_round=5",
                                             "--set", "data.min_samples_per_client=30"],
                                  [SCALE_100K, "data", "min_samples_per_client", "of 20 clients"]),
    "threads_0": (lambda t: ["--threads", "0", "run", TINY], ["--threads", ">= 1"]),
    "unknown_flag": (lambda t: ["run", TINY, "--bogus"], ["unrecognized arguments", "--bogus"]),
    "missing_scenario_arg": (lambda t: ["run"], ["scenario", "required"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_one_line_exit_2_no_output(case, tmp_path, capsys):
    build, expected = CASES[case]
    argv = build(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "out"
    code = _call(argv if argv == ["run"] else [*argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fedsim"), err
    assert "Traceback" not in err
    for part in expected:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing else written either


def test_bad_input_through_run_scenario_subprocess(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "run_scenario.py", TINY, "--set", "training.lr=-1", "--out", str(out)],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"{TINY}: training.lr: Input should be greater than 0 (got -1)" in lines[0]
    assert proc.stdout == ""
    assert not out.exists()


def test_successful_run_writes_tables_and_resolved_scenario(tmp_path, capsys):
    out = tmp_path / "out"
    assert _call(["run", TINY, "--quiet", "--set", "rounds=1", "--out", str(out)]) == 0
    assert capsys.readouterr().err == ""
    for table in ("rounds", "clients", "messages", "histogram"):
        pq = pd.read_parquet(out / f"{table}.parquet")
        csv = pd.read_csv(out / f"{table}.csv")
        assert len(pq) == len(csv) > 0
        assert list(pq.columns) == list(csv.columns)
    rounds = pd.read_parquet(out / "rounds.parquet")
    assert list(rounds["round"]) == [0, 1]
    resolved = yaml.safe_load((out / "scenario.resolved.yaml").read_text())
    assert resolved["name"] == "tiny"
    assert resolved["runs"]["fedavg"]["rounds"] == 1  # the override, resolved
    assert resolved["runs"]["fedavg"]["data"]["num_clients"] == 4
    assert (out / "summary.csv").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folders left behind


def test_failing_run_after_start_leaves_no_output_and_keeps_old(tmp_path, capsys):
    """The first scheme runs to completion, the second fails on its data: nothing is written."""
    doc = yaml.safe_load(Path(TINY).read_text())
    doc["rounds"] = 1
    doc["schemes"] = {"ok": {}, "broken": {"data": {"dataset": "mnist",
                                                    "data_root": str(tmp_path / "nowhere")}}}
    scenario = _write(tmp_path, "two.yaml", yaml.safe_dump(doc).encode())
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("previous results")
    (out / MARKER).write_text('{"kind": "run"}')  # an earlier fedsim run's folder
    code = _call(["run", scenario, "--quiet", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "no MNIST files" in err[0] and "two.yaml: data:" in err[0]
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "two.yaml"]
