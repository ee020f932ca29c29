"""Many clients: synthetic data end to end, the MLP, and lazily built clients."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from fedsim.engine import run
from fedsim.scenario import load_scenario

torch.set_num_threads(1)
SCALE_100K = Path(__file__).resolve().parents[1] / "scenarios" / "scale_100k.yaml"


def _small(*overrides: str):
    """scale_100k shrunk to a few hundred clients and 2 rounds."""
    sets = ["data.num_clients=300", "selection.clients_per_round=10", "rounds=2", "eval_every=1",
            *overrides]
    return load_scenario(SCALE_100K, sets).runs[0]


def test_synthetic_mlp_run_is_deterministic():
    cfg = _small()
    a, b = run(cfg), run(cfg)
    assert a.info["model_params"] == 4270
    assert list(a.rounds["n_completed"]) == [0, 10, 10]
    drop = ["host_seconds", "eval_host_seconds"]
    pd.testing.assert_frame_equal(a.rounds.drop(columns=drop), b.rounds.drop(columns=drop))
    assert len(a.histogram) == 300 * 10
    assert a.rounds["test_accuracy"].notna().all()


def _host_free(result):
    """The tables without host-time columns."""
    host = [c for c in result.clients.columns if c.startswith("host_")]
    return (result.rounds.drop(columns=["host_seconds", "eval_host_seconds"]),
            result.clients.drop(columns=host), result.messages)


def test_lazy_clients_give_the_eager_tables():
    """Availability, dropout, overcommit, a deadline and a lognormal uplink all exercised."""
    sets = ["selection.overcommit=1.5", "selection.deadline_s=0.07", "rounds=3",
            "availability.p_unavailable=0.2", "availability.p_dropout=0.1"]
    lazy, eager = run(_small(*sets)), run(_small(*sets, "compute.clients=eager"))
    assert lazy.info["client_build"] == "lazy" and eager.info["client_build"].startswith("eager")
    assert eager.info["clients_built"] == 300 > lazy.info["clients_built"]
    # only selected clients are built: at most 3 rounds x 15 selected, at least those with rows
    assert lazy.clients["client"].nunique() <= lazy.info["clients_built"] <= 45
    assert lazy.rounds["n_late"].sum() > 0 and (lazy.clients["status"] == "dropout").any()
    for a, b in zip(_host_free(lazy), _host_free(eager)):
        pd.testing.assert_frame_equal(a, b)
