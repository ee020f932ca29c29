"""QSGD codec: unbiasedness, variance bound, exact wire format, determinism, corrupt payloads."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch

from fedsim.codecs.qsgd import QsgdCodec, Quantized, pack, unpack


def _formula_nbytes(p: int, s: int, d: int) -> int:
    """The documented size H + 4 ceil(p/d) + ceil(p b / 8), b = ceil(log2(2s+1)), H = 16."""
    b = math.ceil(math.log2(2 * s + 1))
    return 16 + 4 * math.ceil(p / d) + math.ceil(p * b / 8)


def _draws(codec: QsgdCodec, v: torch.Tensor, n: int) -> np.ndarray:
    """n independent quantizations of v (seeds 0..n-1), as an (n, p) float64 array."""
    return np.stack([codec.decode(codec.encode(v, seed=k, slot=0).payload, numel=v.numel()).numpy()
                     for k in range(n)]).astype(np.float64)


def _unbiased_test_vector() -> torch.Tensor:
    """64 coordinates in buckets of 16: two random buckets, one single-spike bucket, one zero bucket."""
    v = torch.randn(64, generator=torch.Generator().manual_seed(11))
    v[32:] = 0.0
    v[37] = -3.0  # alone in its bucket: |v|/||v|| = 1, so its level is deterministic (s)
    return v


@pytest.mark.parametrize("norm", ["l2", "max"])
@pytest.mark.parametrize("s", [1, 7, 255])
def test_unbiased_within_four_standard_errors(s: int, norm: str) -> None:
    v = _unbiased_test_vector()
    n = 2000
    draws = _draws(QsgdCodec(s, bucket_size=16, norm=norm), v, n)
    mean, std = draws.mean(axis=0), draws.std(axis=0, ddof=1)
    target = v.numpy().astype(np.float64)
    random = std > 0
    assert random.sum() >= 20, "the test vector should have many stochastically rounded coordinates"
    z = np.abs(mean[random] - target[random]) / (std[random] / math.sqrt(n))
    assert z.max() < 4.0, f"coordinate {np.flatnonzero(random)[z.argmax()]} is {z.max():.2f} SE off"
    # Deterministic coordinates (zeros, the spike, the max of a max-norm bucket) must be exact.
    np.testing.assert_allclose(mean[~random], target[~random], rtol=1e-6, atol=0.0)
    assert not random[32:].any()


@pytest.mark.parametrize("s", [1, 3, 7, 15, 255])
def test_l2_variance_within_qsgd_bound(s: int) -> None:
    d, n = 512, 200
    g = torch.Generator().manual_seed(s)
    v = torch.cat([torch.randn(2048, generator=g), torch.randn(2048, generator=g) ** 3,
                   torch.zeros(100)])  # Gaussian, heavy-tailed and zero buckets; last one short
    codec = QsgdCodec(s, bucket_size=d)
    draws = _draws(codec, v, n)
    target = v.numpy().astype(np.float64)
    measured = ((draws - target) ** 2).sum(axis=1).mean()
    bucket_sq = sum(float((v[i:i + d].double() ** 2).sum()) for i in range(0, v.numel(), d))
    assert measured <= min(d / s**2, math.sqrt(d) / s) * bucket_sq
    # And it matches the exact variance sum_i step_b^2 f_i (1 - f_i) of stochastic rounding.
    q = unpack(codec.encode(v, seed=0, slot=0).payload)
    step = np.repeat(q.norms.astype(np.float64) / s, d)[: v.numel()]
    r = np.divide(np.abs(target), step, out=np.zeros_like(target), where=step > 0)
    frac = r - np.floor(r)
    exact = float((step**2 * frac * (1 - frac)).sum())
    assert measured == pytest.approx(exact, rel=0.05)


@pytest.mark.parametrize("s", [1, 7])
def test_rel_error_metric_matches_decoded_error(s: int) -> None:
    v = torch.randn(3000, generator=torch.Generator().manual_seed(3))
    codec = QsgdCodec(s, bucket_size=256)
    enc = codec.encode(v, seed=5, slot=0)
    err = (codec.decode(enc.payload, numel=v.numel()).double() - v.double()).norm() / v.double().norm()
    assert enc.metrics["rel_error"] == pytest.approx(float(err), rel=1e-9)
    assert enc.metrics["bits_per_coord"] == 8 * len(enc.payload) / v.numel()


@pytest.mark.parametrize("d", [512, 7])
@pytest.mark.parametrize("p", [1, 7, 1000, 60001])
@pytest.mark.parametrize("s", [1, 3, 7, 15, 127, 255])
def test_round_trip_and_exact_size(s: int, p: int, d: int) -> None:
    g = torch.Generator().manual_seed(p + s)
    v = torch.randn(p, generator=g) * torch.rand(p, generator=g) ** 4
    codec = QsgdCodec(s, bucket_size=d)
    payload = codec.encode(v, seed=p, slot=0).payload
    assert len(payload) == _formula_nbytes(p, s, d) == codec.payload_nbytes(p)
    q = unpack(payload)
    assert q.signed_levels.shape == (p,) and np.abs(q.signed_levels).max() <= s
    assert pack(q) == payload  # the fused encoder writes exactly what pack() writes
    # decode() is sign * float32(|level| * norm / s), bucket by bucket.
    step = np.repeat(q.norms.astype(np.float64) / s, d)[:p]
    expected = np.sign(q.signed_levels) * (np.abs(q.signed_levels) * step).astype(np.float32)
    np.testing.assert_array_equal(codec.decode(payload, numel=p).numpy(), expected)
    # pack -> unpack is exact for arbitrary levels in [-s, s] and norms.
    rng = np.random.default_rng(p * s)
    levels = rng.integers(-s, s + 1, size=p).astype(np.int32)
    norms = rng.random(-(-p // d)).astype(np.float32)
    back = unpack(pack(Quantized(s, d, "max", norms, levels)))
    np.testing.assert_array_equal(back.signed_levels, levels)
    np.testing.assert_array_equal(back.norms, norms)
    assert (back.levels, back.bucket_size, back.norm) == (s, d, "max")


@pytest.mark.parametrize("norm", ["l2", "max"])
@pytest.mark.parametrize("s", [1, 127])
def test_zero_maps_to_zero(s: int, norm: str) -> None:
    codec = QsgdCodec(s, bucket_size=8, norm=norm)
    enc = codec.encode(torch.zeros(20), seed=1, slot=0)
    out = codec.decode(enc.payload, numel=20)
    assert torch.equal(out, torch.zeros(20)) and not out.isnan().any()
    assert enc.metrics["rel_error"] == 0.0
    assert (unpack(enc.payload).signed_levels == 0).all()
    # -0.0 and a zero bucket inside a nonzero vector also give exact zeros.
    v = torch.cat([-torch.zeros(8), torch.ones(8)])
    assert torch.equal(codec.decode(codec.encode(v, seed=2, slot=0).payload, numel=16)[:8],
                       torch.zeros(8))


def test_same_seed_same_bytes_different_seed_different_bytes() -> None:
    v = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    codec = QsgdCodec(3, bucket_size=128)
    a = codec.encode(v, seed=42, slot=0).payload
    codec.encode(v, seed=43, slot=1)
    assert codec.encode(v, seed=42, slot=7).payload == a  # seed alone fixes the bytes
    assert QsgdCodec(3, bucket_size=128).encode(v, seed=42, slot=0).payload == a
    assert codec.encode(v, seed=43, slot=0).payload != a
    big = 2**63 + 12345  # 64-bit seeds work; seeds agree modulo 2**64
    assert codec.encode(v, seed=big, slot=0).payload == codec.encode(v, seed=big - 2**64, slot=0).payload
    assert codec.encode(v, seed=big, slot=0).payload != codec.encode(v, seed=big + 1, slot=0).payload


def _payload(s: int = 7, p: int = 100, d: int = 16) -> tuple[QsgdCodec, bytes]:
    codec = QsgdCodec(s, bucket_size=d)
    return codec, codec.encode(torch.randn(p, generator=torch.Generator().manual_seed(1)), seed=0,
                               slot=0).payload


def _with_byte(payload: bytes, index: int, value: int) -> bytes:
    return payload[:index] + bytes([value]) + payload[index + 1:]


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda b: b"", "too short"),
    (lambda b: b[:15], "too short"),
    (lambda b: b[:-1], "expected"),
    (lambda b: b + b"\0", "expected"),
    (lambda b: b"XX" + b[2:], "not a QSGD payload"),
    (lambda b: _with_byte(b, 2, 9), "version"),
    (lambda b: _with_byte(b, 3, 7), "norm kind"),
    (lambda b: b[:16] + struct.pack("<f", float("inf")) + b[20:], "norm"),
    (lambda b: b[:16] + struct.pack("<f", -1.0) + b[20:], "norm"),
])
def test_malformed_payload_raises_value_error(mutate, message: str) -> None:
    codec, payload = _payload()
    with pytest.raises(ValueError, match=message):
        codec.decode(mutate(payload), numel=100)
    with pytest.raises(ValueError, match=message):
        unpack(mutate(payload))


def test_corrupt_codes_raise_value_error() -> None:
    codec, payload = _payload(s=5, p=10, d=16)  # b = 4: level field 0..7, valid 0..5
    codes_at = 16 + 4
    with pytest.raises(ValueError, match="exceeds s"):
        codec.decode(_with_byte(payload, codes_at, 0x07), numel=10)
    with pytest.raises(ValueError, match="sign bit"):
        codec.decode(_with_byte(payload, codes_at, 0x08), numel=10)  # "-0"
    codec1, payload1 = _payload(s=1, p=1, d=16)  # 2 bits used, 6 padding bits
    with pytest.raises(ValueError, match="padding"):
        codec1.decode(_with_byte(payload1, len(payload1) - 1, payload1[-1] | 0x80), numel=1)
    with pytest.raises(ValueError, match="corrupt"):
        codec.aggregate([payload, _with_byte(payload, codes_at, 0x07)], [0.5, 0.5], [0, 1], numel=10)


def test_mismatched_configuration_or_size_raises() -> None:
    codec, payload = _payload(s=7, p=100, d=16)
    with pytest.raises(ValueError, match="codec expects"):
        QsgdCodec(3, bucket_size=16).decode(payload, numel=100)
    with pytest.raises(ValueError, match="codec expects"):
        QsgdCodec(7, bucket_size=32).decode(payload, numel=100)
    with pytest.raises(ValueError, match="101"):
        codec.decode(payload, numel=101)


@pytest.mark.parametrize("bad", [torch.zeros(2, 3), torch.zeros(0)])
def test_invalid_update_raises(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError):
        QsgdCodec(3).encode(bad, seed=0, slot=0)


@pytest.mark.parametrize("kwargs", [{"levels": 0}, {"levels": 2**24 + 1}, {"levels": 3, "bucket_size": 0},
                                    {"levels": 3, "norm": "l1"}])
def test_invalid_configuration_raises(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        QsgdCodec(**kwargs)
