"""Scenario files: ``--set`` overrides, scheme merging, and the resolved dump."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from fedsim.codecs.enn import EnnCodecConfig
from fedsim.codecs.identity import IdentityCodecConfig
from fedsim.codecs.qsgd import QsgdCodecConfig
from fedsim.config import RunConfig, Uniform
from fedsim.scenario import ScenarioError, build_scenario, load_scenario, merge

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "scenarios" / "tiny.yaml"

BASE = {
    "name": "merge_test",
    "rounds": 3,
    "training": {"local_epochs": 1, "batch_size": 16, "lr": 0.1},
    "codec": {"kind": "qsgd", "levels": 4, "bucket_size": 128},
    "schemes": {
        "q4": {},
        "q8": {"codec": {"levels": 8}},
        "enn": {"codec": {"kind": "enn", "ratio": 8}, "selection": {"weighting": "uniform"}},
        "fp32": {"codec": {"kind": "identity"}, "training": {"lr": 0.05}},
    },
}


def test_set_overrides_reach_the_run_config():
    run = load_scenario(TINY, ["rounds=5", "training.lr=0.2", "data.train_limit=null",
                               "network.clients.uplink_bps={dist: uniform, low: 1.0e+6, high: 2.0e+6}",
                               "selection.deadline_s=1.5"]).runs[0]
    assert run.rounds == 5 and run.training.lr == 0.2 and run.data.train_limit is None
    assert run.network.clients.uplink_bps == Uniform(dist="uniform", low=1e6, high=2e6)
    assert run.selection.deadline_s == 1.5
    assert run.training.batch_size == 20  # untouched keys keep the file's values


def test_set_creates_sections_and_targets_one_scheme(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(BASE))
    runs = {r.scheme: r for r in load_scenario(path, ["schemes.q8.codec.levels=2",
                                                      "encryption.kind=none"]).runs}
    assert runs["q8"].codec.levels == 2
    assert runs["q4"].codec.levels == 4
    run = load_scenario(TINY, ["codec.kind=qsgd", "codec.levels=3"]).runs[0]
    assert run.codec == QsgdCodecConfig(kind="qsgd", levels=3)


def test_scheme_merging_same_kind_merges_other_kind_replaces():
    runs = {r.scheme: r for r in build_scenario(copy.deepcopy(BASE), "mem.yaml").runs}
    assert list(runs) == ["q4", "q8", "enn", "fp32"]
    assert runs["q4"].codec == QsgdCodecConfig(kind="qsgd", levels=4, bucket_size=128)
    # same kind: merged key by key, bucket_size kept from the base
    assert runs["q8"].codec == QsgdCodecConfig(kind="qsgd", levels=8, bucket_size=128)
    # another kind: the section is replaced (qsgd's levels would be an unknown key for enn)
    assert runs["enn"].codec == EnnCodecConfig(kind="enn", ratio=8)
    assert runs["fp32"].codec == IdentityCodecConfig()
    # other sections merge key by key; every scheme shares the rest of the base
    assert runs["fp32"].training.lr == 0.05 and runs["fp32"].training.batch_size == 16
    assert {r.training.lr for s, r in runs.items() if s != "fp32"} == {0.1}
    assert {r.rounds for r in runs.values()} == {3}
    assert {r.scheme for r in runs.values()} == set(runs)


def test_merge_does_not_modify_its_inputs():
    base, over = {"a": {"b": 1, "c": [1]}}, {"a": {"b": 2}}
    out = merge(base, over)
    assert out == {"a": {"b": 2, "c": [1]}}
    assert base == {"a": {"b": 1, "c": [1]}} and over == {"a": {"b": 2}}
    out["a"]["c"].append(2)
    assert base["a"]["c"] == [1]


def test_resolved_dump_round_trips(tmp_path):
    scenario = build_scenario(copy.deepcopy(BASE), "mem.yaml")
    text = yaml.safe_dump(scenario.resolved, sort_keys=False)
    resolved = yaml.safe_load(text)
    assert resolved["name"] == "merge_test"
    assert list(resolved["runs"]) == ["q4", "q8", "enn", "fp32"]
    for run in scenario.runs:
        dumped = resolved["runs"][run.scheme]
        assert dumped["codec"]["kind"] == run.codec.kind
        assert RunConfig.model_validate(dumped) == run  # every default is written out
        # the dump of one run is itself a valid scenario giving the same run
        doc = {k: v for k, v in dumped.items() if k != "scheme"}
        path = tmp_path / f"{run.scheme}.yaml"
        path.write_text(yaml.safe_dump({**doc, "schemes": {run.scheme: {}}}))
        assert load_scenario(path).runs == [run]


def test_defaults_name_and_single_scheme(tmp_path):
    path = tmp_path / "plain_name.yaml"
    path.write_text("rounds: 2\n")
    scenario = load_scenario(path)
    assert scenario.name == "plain_name"
    assert [r.scheme for r in scenario.runs] == ["fedavg"]


@pytest.mark.parametrize("doc, message", [
    ({"scheme": "x"}, "scheme: set by the schemes mapping"),
    ({"schemes": ["a"]}, "schemes: must be a mapping"),
    ({"schemes": {"a b": {}}}, "schemes.a b: scheme names"),
    ({"schemes": {"a": 3}}, "schemes.a: must be a mapping of overrides"),
    ({"schemes": {"a": {"rounds": 0}}}, "schemes.a.rounds: Input should be greater than or equal to 1"),
    ({"schemes": {"a": {"codec": {"kind": "qsgd"}}}}, "schemes.a.codec.levels: required key is missing"),
    ({"codec": {"kind": "qsgd"}, "schemes": {"a": {"codec": {"bucket_size": 4}}}},
     "f.yaml: codec.levels: required key is missing"),
    ({"name": ""}, "name: must be a plain name"),
])
def test_scenario_structure_errors(doc, message):
    with pytest.raises(ScenarioError) as err:
        build_scenario(doc, "f.yaml")
    assert str(err.value).startswith("f.yaml: ") and message in str(err.value)
