"""Fuzzing ``fedsim run``: random scenario files and ``--set`` overrides give exit 0 or exit 2
with one line, never a traceback, and never touch a file outside the output folder.

The default test runs 500 generated cases through the real front end (YAML, validation, output
checks, table writing) with the simulation replaced by a recorded tiny run, so it fits in CI
time; the slow variant simulates every valid case for real.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedsim import engine
from fedsim.cli import main
from fedsim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
TINY = yaml.safe_load((ROOT / "scenarios" / "tiny.yaml").read_text())
TINY["rounds"] = 1

PATHS = ["name", "seed", "rounds", "target_accuracy", "eval_every", "time_budget_s",
         "data.num_clients", "data.train_limit", "data.partition", "data.partition.kind",
         "data.partition.alpha", "data.dataset", "data.data_root", "model.kind", "model.width_mult",
         "model.pooling", "training.lr", "training.local_epochs", "training.local_steps",
         "training.batch_size", "training.momentum", "selection.fraction",
         "selection.clients_per_round", "selection.overcommit", "selection.deadline_s",
         "selection.weighting", "availability.p_dropout", "network.clients.uplink_bps",
         "network.clients.latency_s", "network.server.ingress_bps", "compute.timing",
         "compute.device", "compute.flops_per_s", "codec", "codec.kind", "codec.levels",
         "codec.bucket_size", "encryption", "encryption.kind", "encryption.key_seed", "attack",
         "attack.clients", "attack.rounds", "schemes", "schemes.fedavg", "schemes.b.rounds",
         "sweep", "description", "bogus", "data.bogus"]

TEXT = "ab0.=:-_ /[]{},'\"#&*!|>%@`\\\t\né\x00"  # YAML's special characters, no charmap
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 12), st.sampled_from([2**63, 2**64, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([5e-324, 1e308, 0.5, 1e6]),
    st.sampled_from(["", "iid", "qsgd", "enn", "keynet", "identity", "none", "lenet5",
                     "mobilenet_v2", "measured", "uniform", "../../victim", "/abs/dir", ".",
                     "..", "a/b", "ok_name", "phone_midrange", "lognormal", "x" * 300]),
    st.text(alphabet=TEXT, max_size=12))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["kind", "dist", "median", "sigma", "levels", "low", "high",
                                     "value", "values", "adversaries", "links", "grid", "x"]),
                    inner, max_size=3)), max_leaves=6)
SPECIAL_FILES = st.sampled_from([
    b"", b"\xff\xfe\x00garbage", b"- a\n- b\n", b"rounds: 1\nrounds: 2\n", b"rounds: [1\n",
    b"a: " + b"[" * 2000, b"name: tiny\nrounds: !!python/object:os.system x\n", b"\t\tbad: indent"])


def _nested_set(doc: dict, path: str, value) -> None:
    node = doc
    parts = path.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


@st.composite
def cases(draw) -> tuple[bytes, list[str], bool]:
    """(scenario file bytes, --set overrides, whether to pass --out)."""
    if draw(st.integers(0, 9)) == 0:
        content = draw(SPECIAL_FILES)
    else:
        doc = yaml.safe_load(yaml.safe_dump(TINY))
        for _ in range(draw(st.integers(0, 3))):
            _nested_set(doc, draw(st.sampled_from(PATHS)), draw(VALUES))
        content = yaml.safe_dump(doc, allow_unicode=True).encode()
    overrides = []
    for _ in range(draw(st.integers(0, 2))):
        if draw(st.booleans()):
            value = yaml.safe_dump(draw(VALUES), default_flow_style=True).strip()
            if value.endswith("\n..."):
                value = value[:-4].strip()
            overrides.append(f"{draw(st.sampled_from(PATHS))}={value}")
        else:
            overrides.append(draw(st.text(alphabet=TEXT, max_size=20)))
    return content, overrides, draw(st.booleans())


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _check(case, capsys) -> None:
    content, overrides, with_out = case
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Path(tmp) / "sandbox"
        (sandbox / "victim").mkdir(parents=True)
        (sandbox / "victim" / "keep.txt").write_text("user file")
        (sandbox / "s.yaml").write_bytes(content)
        before = _snapshot(Path(tmp))
        argv = ["run", "s.yaml", "--quiet", *(a for o in overrides for a in ("--set", o))]
        if with_out:
            argv += ["--out", "out"]
        cwd = os.getcwd()
        os.chdir(sandbox)
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse, e.g. an override that looks like a flag
            code = exc.code
        finally:
            os.chdir(cwd)
        err = capsys.readouterr().err.strip().splitlines()
        assert code in (0, 2), (code, err)
        if code == 2:
            assert len(err) == 1 and err[0].startswith("fedsim"), err
        assert not any("Traceback" in line for line in err)
        after = _snapshot(Path(tmp))
        allowed = ("sandbox/out/",) if with_out else ("sandbox/results/",)
        changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
        assert all(p.startswith(allowed) for p in changed), changed
        if code == 0:
            assert any(p.endswith("fedsim-output.json") for p in changed)


@pytest.fixture(scope="module")
def recorded():
    """A real one-round tiny run, replayed for every valid generated case."""
    cfg = load_scenario(ROOT / "scenarios" / "tiny.yaml", ["rounds=1"]).runs[0]
    return engine.run(cfg)


@settings(max_examples=500, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=cases())
def test_fuzz_front_end(case, capsys, monkeypatch, recorded):
    monkeypatch.setattr(engine, "run", lambda cfg, progress=False: dataclasses.replace(
        recorded, config=cfg))
    _check(case, capsys)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=cases())
def test_fuzz_with_real_simulation(case, capsys):
    _check(case, capsys)
