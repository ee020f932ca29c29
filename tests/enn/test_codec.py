"""EnnCodec: payload format and size, aggregation of the average, fallback, weight check."""

from __future__ import annotations

import math
import struct

import pytest
import torch

from fedsim.codecs.enn import HEADER_BYTES, EnnCodec, common_scale
from fedsim.enn import average_fidelity
from fedsim.wire import unpack_vector


@pytest.fixture()
def codec(small_net) -> EnnCodec:
    return EnnCodec(small_net, scale=1.0)


def _updates(k: int, numel: int, std: float, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [std * torch.randn(numel, generator=gen) for _ in range(k)]


@pytest.mark.parametrize("numel", [1, 16, 100, 1601])
def test_payload_exact_size_and_header(codec, numel):
    enc = codec.encode(torch.randn(numel), seed=0, slot=0)
    expected = HEADER_BYTES + 4 * 8 * math.ceil(numel / 16)
    assert len(enc.payload) == codec.payload_nbytes(numel) == expected
    assert struct.unpack_from("<2sHI", enc.payload) == (b"EC", 8, numel)
    assert enc.metrics["bits_per_coord"] == pytest.approx(8 * expected / numel)


def test_setup_payload_is_encoder_weights(codec, small_net):
    weights = unpack_vector(codec.setup_payload())
    assert weights.numel() == sum(p.numel() for p in small_net.encoder.parameters())
    assert torch.equal(weights[: 16 * 16], small_net.encoder[0].weight.reshape(-1))


def test_single_payload_cannot_be_decoded(codec):
    with pytest.raises(NotImplementedError):
        codec.decode(codec.encode(torch.randn(32), seed=0, slot=0).payload, numel=32)


@pytest.mark.parametrize("std", [math.sqrt(0.1), 1e-3])
def test_aggregate_approximates_average(codec, std):
    numel = 16 * 300 + 5
    ups = _updates(3, numel, std)
    codec.scale = common_scale(std, 0.1)
    payloads = [codec.encode(u, seed=0, slot=i).payload for i, u in enumerate(ups)]
    out = codec.aggregate(payloads, [1 / 3] * 3, [0, 1, 2], numel=numel)
    true = torch.stack(ups).mean(0)
    assert out.shape == (numel,) and out.dtype == torch.float32
    assert ((out - true) ** 2).mean() < 0.7 * (true ** 2).mean()
    assert average_fidelity(out, true)["cosine"] > 0.5


def _gain(out: torch.Tensor, true: torch.Tensor) -> float:
    """Least-squares factor a minimising ||a out - true||; about 1 for an MMSE-like estimate."""
    return float(out @ true / (out @ out))


def test_fewer_than_n_reporters_fallback(codec):
    numel = 16 * 300
    ups = _updates(2, numel, math.sqrt(0.1), seed=1)
    payloads = [codec.encode(u, seed=0, slot=s).payload for u, s in zip(ups, (2, 0))]
    out = codec.aggregate(payloads, [0.5, 0.5], [2, 0], numel=numel)
    true = torch.stack(ups).mean(0)
    assert out.shape == (numel,) and torch.isfinite(out).all()
    assert ((out - true) ** 2).mean() < 0.8 * (true ** 2).mean()
    assert 0.85 < _gain(out, true) < 1.15  # without the N/k rescale the gain would be 1.5
    single = codec.aggregate(payloads[:1], [1.0], [2], numel=numel)
    assert ((single - ups[0]) ** 2).mean() < 0.8 * (ups[0] ** 2).mean()
    assert 0.85 < _gain(single, ups[0]) < 1.15


def test_non_uniform_weights_raise(codec):
    payloads = [codec.encode(u, seed=0, slot=i).payload for i, u in enumerate(_updates(3, 40, 0.3))]
    with pytest.raises(ValueError, match="unweighted mean"):
        codec.aggregate(payloads, [0.5, 0.25, 0.25], [0, 1, 2], numel=40)


def test_bad_slots_and_payloads_raise(codec):
    p = codec.encode(torch.randn(40), seed=0, slot=0).payload
    with pytest.raises(ValueError):
        codec.aggregate([p, p], [0.5, 0.5], [1, 1], numel=40)
    with pytest.raises(ValueError):
        codec.aggregate([p], [1.0], [-1], numel=40)
    with pytest.raises(ValueError):
        codec.aggregate([p], [1.0], [0], numel=41)


def test_from_args_uses_cache(tmp_path):
    args = {"n": 8, "ratio": 2, "slots": 2, "residual_blocks": 0, "decoder_width": 16, "encoder_hidden": (8,),
                "steps": 10, "batch": 8}
    a = EnnCodec.from_args(scale=2.0, cache_dir=tmp_path, **args)
    b = EnnCodec.from_args(scale=2.0, cache_dir=tmp_path, **args)
    assert a.name == "enn" and a.scale == 2.0 and a.config.m == 4
    assert a.setup_payload() == b.setup_payload()
    with pytest.raises(ValueError):
        EnnCodec(a.net, scale=0.0)
