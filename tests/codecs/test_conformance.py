"""Properties every uplink codec with single-payload decoding must have."""

from __future__ import annotations

import pytest
import torch

from fedsim.codecs.base import UpdateCodec
from fedsim.codecs.identity import IdentityCodec
from fedsim.codecs.qsgd import QsgdCodec

CODECS = [IdentityCodec(), QsgdCodec(7), QsgdCodec(1, bucket_size=64, norm="max"),
          QsgdCodec(255, bucket_size=100)]
IDS = ["identity", "qsgd-s7-l2", "qsgd-s1-max", "qsgd-s255-d100"]


def _vec(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("codec", CODECS, ids=IDS)
@pytest.mark.parametrize("numel", [1, 13, 5000])
def test_shapes_sizes_and_metrics(codec: UpdateCodec, numel: int) -> None:
    enc = codec.encode(_vec(numel, numel), seed=3, slot=0)
    assert isinstance(enc.payload, bytes)
    size = codec.payload_nbytes(numel)
    assert isinstance(size, int) and len(enc.payload) == size
    assert set(enc.metrics) >= {"bits_per_coord", "rel_error"}
    # Payload bits per coordinate, with or without the fixed header (identity reports 32).
    assert enc.metrics["bits_per_coord"] == 8 * len(enc.payload) / numel
    out = codec.decode(enc.payload, numel=numel)
    assert out.shape == (numel,) and out.dtype == torch.float32
    agg = codec.aggregate([enc.payload], [1.0], [0], numel=numel)
    assert agg.shape == (numel,) and agg.dtype == torch.float32
    assert torch.equal(agg, out)


def test_identity_codec_is_lossless_and_aggregates_exactly() -> None:
    codec = IdentityCodec()
    vs = [_vec(1000, k) for k in range(5)]
    weights = [0.1, 0.2, 0.3, 0.15, 0.25]
    payloads = [codec.encode(v, seed=0, slot=k).payload for k, v in enumerate(vs)]
    assert torch.equal(codec.decode(payloads[0], numel=1000), vs[0])
    expected = sum(w * v.double() for w, v in zip(weights, vs, strict=True)).float()
    assert torch.equal(codec.aggregate(payloads, weights, list(range(5)), numel=1000), expected)


@pytest.mark.parametrize("codec", CODECS[1:], ids=IDS[1:])
def test_qsgd_aggregate_approaches_weighted_mean_with_many_clients(codec: QsgdCodec) -> None:
    n_clients, numel = 400, 2000
    base = _vec(numel, 0)
    vs = [base + 0.3 * _vec(numel, k + 1) for k in range(n_clients)]
    w = torch.rand(n_clients, generator=torch.Generator().manual_seed(9)).double()
    weights = (w / w.sum()).tolist()
    encs = [codec.encode(v, seed=k, slot=k) for k, v in enumerate(vs)]
    agg = codec.aggregate([e.payload for e in encs], weights, list(range(n_clients)), numel=numel)
    # Exactly the float64 weighted sum of the individual decodes, rounded once to float32.
    decoded = sum(wk * codec.decode(e.payload, numel=numel).double()
                  for wk, e in zip(weights, encs, strict=True))
    torch.testing.assert_close(agg, decoded.float(), rtol=0, atol=0)
    # Independent unbiased errors: E||agg - mean||^2 = sum_k w_k^2 ||Q(v_k) - v_k||^2.
    expected = sum(wk * v.double() for wk, v in zip(weights, vs, strict=True))
    predicted = sum(wk**2 * (e.metrics["rel_error"] * v.double().norm()) ** 2
                    for wk, e, v in zip(weights, encs, vs, strict=True))
    err2 = float(((agg.double() - expected) ** 2).sum())
    assert err2 == pytest.approx(float(predicted), rel=0.25)
    assert err2 ** 0.5 < 0.15 * float(expected.norm())
