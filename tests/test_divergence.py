"""Divergence is reported: a non-finite global model marks the round and the run, stops that
scheme cleanly and keeps every other scheme's tables; codecs never crash on NaN."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from fedsim.cli import main
from fedsim.codecs.qsgd import QsgdCodec, payload_nbytes

ROOT = Path(__file__).resolve().parents[1]


def _scenario(tmp: Path) -> Path:
    doc = yaml.safe_load((ROOT / "scenarios" / "tiny.yaml").read_text())
    doc["rounds"] = 3
    doc["schemes"] = {"ok": {}, "blowup": {"training": {"lr": 1.0e4}},
                      "blowup_qsgd": {"training": {"lr": 1.0e4},
                                      "codec": {"kind": "qsgd", "levels": 3}}}
    path = tmp / "div.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_diverged_schemes_are_marked_stopped_and_others_kept(tmp_path, capsys, caplog):
    out = tmp_path / "out"
    assert main(["run", str(_scenario(tmp_path)), "--quiet", "--out", str(out)]) == 0
    assert capsys.readouterr().err == ""
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and all("diverged in round 1" in w for w in warnings), warnings
    rounds = pd.read_parquet(out / "rounds.parquet")
    by = {s: g.sort_values("round") for s, g in rounds.groupby("scheme")}
    assert list(by["ok"]["round"]) == [0, 1, 2, 3] and not by["ok"]["diverged"].any()
    for s in ("blowup", "blowup_qsgd"):
        assert list(by[s]["round"]) == [0, 1]  # stopped after the diverged round
        assert list(by[s]["diverged"]) == [False, True]
        assert math.isnan(by[s]["test_accuracy"].iloc[-1])  # not "accuracy 0.11"
    summ = pd.read_csv(out / "summary.csv").set_index("scheme")
    assert summ.loc["ok", "status"] == "ok" and summ.loc["ok", "final_accuracy"] > 0
    assert list(summ.loc[["blowup", "blowup_qsgd"], "status"]) == ["diverged"] * 2
    assert list(summ.loc[["blowup", "blowup_qsgd"], "diverged_round"]) == [1, 1]
    assert summ.loc[["blowup", "blowup_qsgd"], "final_accuracy"].isna().all()


@pytest.mark.parametrize("bad", [math.nan, math.inf, 3e38])
def test_qsgd_encodes_non_finite_update_as_nan_without_crashing(bad):
    codec = QsgdCodec(levels=3, bucket_size=4)
    v = torch.arange(10, dtype=torch.float32)
    v[5] = bad
    v[6] = bad if bad == 3e38 else v[6]  # two huge values: the bucket's L2 norm overflows fp32
    enc = codec.encode(v, seed=1, slot=0)
    assert len(enc.payload) == payload_nbytes(10, 3, 4)
    assert math.isnan(enc.metrics["rel_error"])
    dec = codec.decode(enc.payload, numel=10)
    assert torch.isnan(dec).all()
    agg = codec.aggregate([enc.payload, codec.encode(torch.ones(10), seed=2, slot=1).payload],
                          [0.5, 0.5], [0, 1], numel=10)
    assert torch.isnan(agg).all()


def test_qsgd_still_rejects_infinite_or_negative_norms_on_the_wire():
    codec = QsgdCodec(levels=3, bucket_size=4)
    payload = bytearray(codec.encode(torch.ones(8), seed=1, slot=0).payload)
    payload[16:20] = np.float32(-1.0).tobytes()
    with pytest.raises(ValueError, match="negative or infinite"):
        codec.decode(bytes(payload), numel=8)
