"""Issue 14's list of inputs that gave a traceback or a silent no-op: each is now one line, exit 2.

One case per reported defect (numbers refer to the issue's items 5 and 6); the output folder is
never created and nothing is simulated.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from fedsim import engine
from fedsim.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "scenarios" / "tiny.yaml")


def _write(tmp: Path, name: str, text: str) -> str:
    (tmp / name).write_text(text)
    return str(tmp / name)


def _mnist(tmp: Path, train_labels: bytes, n_train_images: int) -> str:
    """A tiny MNIST in torchvision's idx layout with the given training labels."""
    raw = tmp / "mn" / "MNIST" / "raw"
    raw.mkdir(parents=True)

    def images(n: int) -> bytes:
        return struct.pack(">IIII", 0x803, n, 28, 28) + bytes(n * 784)

    def labels(y: bytes) -> bytes:
        return struct.pack(">II", 0x801, len(y)) + y
    (raw / "train-images-idx3-ubyte").write_bytes(images(n_train_images))
    (raw / "train-labels-idx1-ubyte").write_bytes(labels(train_labels))
    (raw / "t10k-images-idx3-ubyte").write_bytes(images(10))
    (raw / "t10k-labels-idx1-ubyte").write_bytes(labels(bytes(range(10))))
    return str(tmp / "mn")


def _set(*items: str):
    return lambda t: ["run", TINY, *(a for i in items for a in ("--set", i))]


ATTACK = "attack={adversaries: [{kind: server}], mode: friendly}"

CASES = {  # id -> (argv builder, substrings of the one error line)
    "5_seed_negative": (_set("seed=-1"), ["seed", "greater than or equal to 0"]),
    "5_seed_2_64": (_set(f"seed={2**64}"), ["seed", "less than"]),
    "5_latency_inf": (_set("network.clients.latency_s=.inf"), ["network.clients.latency_s"]),
    "5_overcommit_inf": (_set("selection.overcommit=.inf"), ["selection.overcommit", "finite"]),
    "5_uplink_denormal": (_set("network.clients.uplink_bps=5e-324"),
                          ["network.clients.uplink_bps", "between 1 and"]),
    "5_lognormal_sigma_1000": (
        _set("network.clients.uplink_bps={dist: lognormal, median: 5.0e+6, sigma: 1000}"),
        ["network.clients.uplink_bps", "log-normal sigma"]),
    "5_measured_without_device": (_set("compute={timing: measured, device: null}"),
                                  ["compute", "device", "flops_per_s"]),
    "5_qsgd_levels_too_many": (_set(f"codec={{kind: qsgd, levels: {2**24 + 1}}}"),
                               ["codec.levels", "less than or equal to 16777216"]),
    "5_qsgd_bucket_too_big": (_set(f"codec={{kind: qsgd, levels: 3, bucket_size: {2**32}}}"),
                              ["codec.bucket_size", "less than 4294967296"]),
    "5_width_mult_on_lenet": (_set("model.width_mult=0.5"), ["width_mult", "mobilenet_v2"]),
    "5_enn_non_uniform_weighting": (_set("codec={kind: enn}"), ["enn", "weighting: uniform"]),
    "5_deep_nesting": (lambda t: ["run", _write(t, "deep.yaml", "a: " + "[" * 100_000)],
                       ["deep.yaml", "nested deeper than"]),
    "5_deep_nesting_in_set": (_set("rounds=" + "[" * 50 + "]" * 50), ["--set", "nested deeper"]),
    "5_unreadable_file": (lambda t: ["run", "/proc/self/mem"], ["/proc/self/mem", "cannot read"]),
    "5_mnist_label_above_9": (
        lambda t: _set("data.dataset=mnist", f"data.data_root={_mnist(t, bytes([12] * 20), 20)}",
                       "data.train_limit=null", "data.test_limit=null")(t),
        ["data", "labels must be in 0..9", "12"]),
    "5_mnist_counts_differ": (
        lambda t: _set("data.dataset=mnist", f"data.data_root={_mnist(t, bytes(20), 25)}",
                       "data.train_limit=null", "data.test_limit=null")(t),
        ["data", "25 images but 20 labels"]),
    "6_attack_client_missing": (_set(ATTACK, "attack.clients=[7]"),
                                ["attack.clients", "client 7 does not exist", "0..3"]),
    "6_attack_round_missing": (_set(ATTACK, "attack.rounds=[5]"),
                               ["attack.rounds", "round 5 does not exist", "rounds: 2"]),
    "6_eavesdropper_link_missing": (
        _set("attack={adversaries: [{kind: eavesdropper, links: [client/9:up]}]}"),
        ["eavesdropper link 'client/9:up' does not exist"]),
    "6_key_agent_link_without_keynet": (
        _set("attack={adversaries: [{kind: eavesdropper, links: [key_agent:egress]}]}"),
        ["key_agent:egress", "keynet"]),
    "6_rounds_true": (_set("rounds=true"), ["rounds", "not true/false"]),
    "6_bool_in_list": (_set(ATTACK, "attack.rounds=[true]"), ["attack.rounds", "true/false"]),
    "6_duplicate_key": (lambda t: ["run", _write(t, "dup.yaml", "rounds: 2\nseed: 1\nrounds: 3\n")],
                        ["dup.yaml", "duplicate key 'rounds'", "line 3"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_defect_is_one_line_exit_2(case, tmp_path, capsys):
    build, expected = CASES[case]
    out = tmp_path / "out"
    code = main([*build(tmp_path), "--quiet", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("fedsim: error: ") and "Traceback" not in err[0]
    for part in expected:
        assert part in err[0], f"{part!r} not in {err[0]!r}"
    assert not out.exists()


def test_unexpected_exception_is_one_line_with_hint(tmp_path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire\nsecond line")
    monkeypatch.setattr(engine, "run", broken)
    assert main(["run", TINY, "--quiet", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["fedsim: error: RuntimeError: disk on fire (run with -v for the traceback)"]
    with pytest.raises(RuntimeError):
        main(["-v", "run", TINY, "--quiet", "--out", str(tmp_path / "o")])
