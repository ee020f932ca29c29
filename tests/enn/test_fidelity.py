"""fedsim.enn.fidelity's real updates are the updates a run's clients compute."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedsim import engine
from fedsim.enn.fidelity import RealClients, collect_updates
from fedsim.enn.proxy import load_flat
from fedsim.placement import resolve_placement
from fedsim.scenario import load_scenario
from fedsim.training import evaluate

TINY = Path(__file__).resolve().parents[2] / "scenarios" / "tiny.yaml"


def test_real_clients_train_what_a_run_trains():
    """With every client selected and uniform weights, the initial model plus the mean of
    RealClients' round-1 updates is the run's round-1 global model: same test accuracy and loss."""
    cfg = load_scenario(TINY, ["rounds=1", "selection.weighting=uniform",
                               "compute.trainer=sequential", "compute.torch_device=cpu"]).runs[0]
    run = engine.run(cfg).rounds.set_index("round").loc[1]
    clients = RealClients(cfg)
    flat = clients.initial()
    chosen, ups = clients.train_round(1, flat)
    assert chosen == [0, 1, 2, 3] and ups.shape == (4, flat.numel())
    load_flat(clients.model, flat + ups.mean(0))
    data = engine.get_dataset(cfg)
    x, y = resolve_placement("cpu").tensor(data.x_test), data.y_test
    acc, loss = evaluate(clients.model, x, y)
    assert acc == run["test_accuracy"] and loss == pytest.approx(run["test_loss"], rel=1e-5)


def test_collect_updates_is_deterministic_and_advances():
    cfg = load_scenario(TINY, ["selection.clients_per_round=2"]).runs[0]
    first, again = collect_updates(cfg, 2), collect_updates(cfg, 2)
    assert [u.shape for u in first] == [(2, first[0].shape[1])] * 2
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], first[1])  # round 2 starts from the advanced model


def test_enn_table_fidelity_section(tmp_path):
    """``fedsim enn-table`` scores real lenet5 updates (fidelity: section) at every ratio."""
    import pandas as pd

    from fedsim.cli import main

    spec = tmp_path / "t.yaml"
    spec.write_text(
        "enn: {n: 16, ratio: 2, slots: 3, encoder_hidden: [16], decoder_width: 64, steps: 300,"
        " batch: 128}\nsettings:\n  - {scheme: end_to_end, residual_blocks: 1, paper_mse: 0.002}\n"
        "fidelity: {models: [lenet5], ratios: [2], residual_blocks: 1, num_clients: 20,"
        " classes_per_client: 2, rounds: 2, batch_size: 50}\n")
    assert main(["enn-table", str(spec), "--out", str(tmp_path / "o"), "--tables", "fidelity"]) == 0
    rows = pd.read_csv(tmp_path / "o" / "fidelity_rounds.csv")
    assert list(rows["round"]) == [1, 2] and set(rows["params"]) == {61706}
    assert rows["cosine"].between(-1, 1).all() and (rows["bytes_per_client"] < rows["fp32_bytes"]).all()
