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
