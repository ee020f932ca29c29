"""Stragglers cost nothing: updates the server will not use are never trained, and the tables are
those of the path that trains every selected client."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from fedsim import engine
from fedsim.scenario import load_scenario

#: 15 of 30 clients selected per round, the first 10 updates kept, a deadline that cuts slow ones
OVERCOMMITTED = ["rounds=3", "data.num_clients=30", "data.train_limit=900", "data.test_limit=200",
                 "selection.clients_per_round=10", "selection.overcommit=1.5",
                 "selection.deadline_s=0.7", "availability.p_dropout=0.1", "compute.device=null",
                 "compute.flops_per_s={dist: lognormal, median: 2.0e+10, sigma: 1.0}",
                 "network.clients.uplink_bps={dist: lognormal, median: 5.0e+6, sigma: 1.0}"]


def _run(*over: str):
    cfg = load_scenario("scenarios/quickstart.yaml", [*OVERCOMMITTED, *over]).runs[0]
    torch.set_num_threads(1)
    return engine.run(cfg)


def _no_host(df: pd.DataFrame) -> pd.DataFrame:
    return df[sorted(c for c in df.columns if "host" not in c)]


@pytest.mark.parametrize("trainer", ["batched", "sequential"])
def test_unused_updates_are_not_trained_and_tables_are_unchanged(trainer):
    every = _run(f"compute.trainer={trainer}", "compute.stragglers=train")
    used = _run(f"compute.trainer={trainer}")
    assert used.info["unused_updates"] == "skipped"
    assert every.info["unused_updates"] == "trained (compute.stragglers: train)"
    rounds = used.rounds[used.rounds["round"] > 0]
    unused = int((rounds["n_selected"] - rounds["n_completed"]).sum())
    assert rounds["n_late"].sum() > 0 and rounds["n_surplus"].sum() > 0 and unused >= 10
    assert used.info["updates_trained"] == rounds["n_completed"].sum()
    # every client that reported trained (and some still downloading when the run ended did not)
    assert every.info["updates_trained"] >= len(every.clients) > rounds["n_completed"].sum()
    for table in ("rounds", "clients", "messages"):
        pd.testing.assert_frame_equal(_no_host(getattr(every, table)),
                                      _no_host(getattr(used, table)))
    # what training measured is shown for the updates the server used, and only for them
    clients = used.clients
    assert clients.loc[clients["status"] == "aggregated", "train_loss"].notna().all()
    assert clients.loc[clients["status"] != "aggregated", "train_loss"].isna().all()


@pytest.mark.parametrize(("over", "why"), [
    (["compute.timing=measured"], "compute.timing measured"),
    (["encryption={kind: keynet, key_seed: 3}"], "encryption"),
    (["codec={kind: enn, ratio: 4, chunk: 16, error_feedback: true, pretrain: {steps: 20}}",
      "selection.weighting=uniform", "selection.overcommit=1.0"], "per-client state"),
])
def test_falls_back_to_training_everyone_and_says_why(over, why):
    res = _run("rounds=1", *over)
    assert res.info["unused_updates"].startswith("trained (") and why in res.info["unused_updates"]
    assert res.info["updates_trained"] > res.rounds["n_completed"].sum()  # the unused trained too
