"""ENN codec options: chunk side information, error feedback, pre-training on proxy updates."""

from __future__ import annotations

import math
import struct

import pytest
import torch

from fedsim.codecs.enn import HEADER_BYTES, SIDE_BYTES, EnnCodec, chunk_rms, training_groups
from fedsim.enn import EnnConfig, average_fidelity, train_enn
from fedsim.enn.proxy import EnnProxyConfig, chunk_groups, proxy_digits, proxy_key, proxy_updates
from fedsim.models import build_model
from fedsim.wire import HEADER_BYTES as FP32_HEADER


def _ups(k: int, numel: int, std: float, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0.1, 3.0, numel)  # chunk RMS varies along the vector
    return [std * ramp * torch.randn(numel, generator=gen) for _ in range(k)]


def _agg(codec: EnnCodec, ups: list[torch.Tensor], rnd: int = 0) -> torch.Tensor:
    k, numel = len(ups), ups[0].numel()
    payloads = [codec.encode(u, seed=0, slot=i, rnd=rnd).payload for i, u in enumerate(ups)]
    return codec.aggregate(payloads, [1 / k] * k, list(range(k)), numel=numel)


@pytest.mark.parametrize("numel", [1, 16, 1601])
def test_side_info_payload_exact_size(small_net, numel):
    codec = EnnCodec(small_net, scale=1.0, side_info=True)
    update = torch.randn(numel)
    payload = codec.encode(update, seed=0, slot=0).payload
    c = math.ceil(numel / 16)
    assert len(payload) == codec.payload_nbytes(numel) == HEADER_BYTES + SIDE_BYTES * c + 4 * 8 * c
    assert struct.unpack_from("<2sHI", payload) == (b"ES", 8, numel)
    codes, rms = codec.parse(payload, numel)
    padded = torch.nn.functional.pad(update, (0, 16 * c - numel)).view(c, 16)
    assert codes.shape == (c, 8) and torch.equal(rms, chunk_rms(padded))


def test_side_info_is_scale_free(small_net):
    """Chunk RMS normalisation: the decoded average follows any common scale exactly (2**k)."""
    codec = EnnCodec(small_net, scale=1.0, side_info=True)
    ups = _ups(3, 16 * 200 + 3, 1e-3)
    base = _agg(codec, ups)
    for factor in (2.0 ** -20, 2.0 ** 10):
        torch.testing.assert_close(_agg(codec, [factor * u for u in ups]), factor * base,
                                   rtol=1e-4, atol=0.0)
    assert average_fidelity(base, torch.stack(ups).mean(0))["cosine"] > 0.5
    # a fixed scale fitted to 1e-3 fails at 1e-6, side information does not
    fixed = EnnCodec(small_net, scale=math.sqrt(0.1) / 1.7e-3)
    tiny = [1e-3 * u for u in ups]
    assert average_fidelity(_agg(fixed, tiny), torch.stack(tiny).mean(0))["cosine"] < 0.5


def test_side_info_fewer_reporters_and_mismatch(small_net):
    codec = EnnCodec(small_net, scale=1.0, side_info=True)
    ups = _ups(2, 16 * 100, 1e-2, seed=3)
    payloads = [codec.encode(u, seed=0, slot=s).payload for u, s in zip(ups, (2, 0))]
    out = codec.aggregate(payloads, [0.5, 0.5], [2, 0], numel=ups[0].numel())
    assert average_fidelity(out, torch.stack(ups).mean(0))["cosine"] > 0.5
    plain = EnnCodec(small_net, scale=1.0).encode(ups[0], seed=0, slot=0).payload
    with pytest.raises(ValueError):
        codec.aggregate([plain], [1.0], [0], numel=ups[0].numel())


def test_error_feedback_offsets_and_bytes(small_net):
    codec = EnnCodec(small_net, scale=1.0, side_info=True, error_feedback=True)
    numel = 1601
    offsets = {codec.offset(r) for r in range(1, 40)}
    assert len(offsets) > 10 and all(0 <= o < 16 for o in offsets)
    for rnd in (1, 2, 3):
        o = codec.offset(rnd)
        payload = codec.encode(torch.randn(numel), seed=0, slot=0, rnd=rnd).payload
        c = math.ceil((numel + o) / 16)
        assert len(payload) == codec.payload_nbytes(numel, o) == HEADER_BYTES + 2 + 2 * c + 32 * c
        assert codec.payload_offset(payload) == o
    a = codec.encode(torch.randn(numel), seed=0, slot=0, rnd=1).payload
    b = codec.encode(torch.randn(numel), seed=0, slot=1, rnd=2).payload
    if codec.offset(1) != codec.offset(2):
        with pytest.raises(ValueError):
            codec.aggregate([a, b], [0.5, 0.5], [0, 1], numel=numel)
    # the set-up download carries the encoder and the decoder
    params = sum(p.numel() for p in small_net.parameters())
    assert len(codec.setup_payload()) == FP32_HEADER + 4 * params
    assert EnnCodec(small_net, scale=1.0).for_client(3) is not None


def test_error_feedback_residual_bookkeeping(small_net):
    """The client keeps x - d, with d its decoded contribution; the running sum of d tracks the
    running sum of updates better than without feedback."""
    codec = EnnCodec(small_net, scale=1.0, side_info=True, error_feedback=True)
    plain = EnnCodec(small_net, scale=1.0, side_info=True)
    numel, rounds = 16 * 64, 12
    ups = _ups(rounds, numel, 1e-2, seed=5)
    enc = codec.for_client(0)
    sent_ef, sent_plain, prev = torch.zeros(numel), torch.zeros(numel), torch.zeros(numel)
    for rnd, u in enumerate(ups, start=1):
        e = enc.encode(u, seed=0, slot=0, rnd=rnd)
        x = u + prev
        d = codec.own_contribution(e.payload, 0, numel)
        torch.testing.assert_close(enc.residual, x - d)
        assert e.metrics["ef_rel_error"] == pytest.approx(float((x - d).norm() / x.norm()), rel=1e-5)
        prev = enc.residual
        sent_ef += d
        sent_plain += plain.own_contribution(plain.encode(u, seed=0, slot=0).payload, 0, numel)
    total = torch.stack(ups).sum(0)
    err_ef = float((sent_ef - total).norm() / total.norm())
    err_plain = float((sent_plain - total).norm() / total.norm())
    assert err_ef < 0.8 * err_plain


def test_own_contribution_sums_to_aggregate(small_net):
    """For the isolation estimate, the N slots' contributions add up to about the decoded mean."""
    codec = EnnCodec(small_net, scale=1.0, side_info=True)
    ups = _ups(3, 16 * 100, 1e-2, seed=7)
    payloads = [codec.encode(u, seed=0, slot=i).payload for i, u in enumerate(ups)]
    agg = codec.aggregate(payloads, [1 / 3] * 3, [0, 1, 2], numel=ups[0].numel())
    own = torch.stack([codec.own_contribution(p, i, ups[0].numel()) for i, p in enumerate(payloads)])
    assert average_fidelity(own.mean(0), agg)["cosine"] > 0.9


def test_training_groups_units():
    cfg = EnnConfig(n=16, ratio=2, slots=3)
    ups = [torch.stack(_ups(3, 50, 1e-3, seed=s)) for s in (0, 1)]
    groups = chunk_groups(ups, 16)
    assert groups.shape == (2 * 4, 3, 16)
    torch.testing.assert_close(groups[1, 2], ups[0][2, 16:32])
    assert torch.equal(training_groups(ups, cfg, scale=5.0, side_info=False), 5.0 * groups)
    normed = training_groups(ups, cfg, scale=5.0, side_info=True)
    rho = chunk_rms(normed).mean(1)
    torch.testing.assert_close(rho, torch.full_like(rho, math.sqrt(0.1)), rtol=2e-2, atol=0.0)


def test_train_on_groups_deterministic_and_learns():
    cfg = EnnConfig(n=16, ratio=2, slots=3, residual_blocks=0, decoder_width=32, encoder_hidden=(),
                    steps=150, batch=32)
    gen = torch.Generator().manual_seed(0)
    basis = torch.randn(4, 16, generator=gen)  # data on a 4-dim subspace: a code of 8 suffices
    groups = (torch.randn(640, 3, 4, generator=gen) @ basis) * 0.15
    a, b = train_enn(cfg, groups), train_enn(cfg, groups)
    assert a.final_loss == b.final_loss
    with torch.no_grad():
        mse = float(((a.net(groups) - groups.mean(1)) ** 2).mean())
    assert mse < 0.2 * float((groups.mean(1) ** 2).mean())


def test_proxy_digits_and_updates_deterministic():
    x, y = proxy_digits()
    assert x.shape == (1797, 1, 28, 28) and y.shape == (1797,) and set(y.tolist()) == set(range(10))
    assert float(x.min()) == pytest.approx(-0.1307 / 0.3081, abs=1e-5)
    torch.manual_seed(0)
    model = build_model("lenet5")
    spec = EnnProxyConfig(rounds=2, local_epochs=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    one, two = proxy_updates(model, spec, slots=2), proxy_updates(model, spec, slots=2)
    assert len(one) == 2 and one[0].shape == (2, sum(p.numel() for p in model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(one, two))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert float(one[0].abs().max()) > 0
    assert (proxy_key(spec, model) == proxy_key(EnnProxyConfig(rounds=2, local_epochs=1), model)
            != proxy_key(EnnProxyConfig(), model))


@pytest.fixture(scope="module")
def linear_net(tmp_path_factory):
    from fedsim.enn import load_or_train

    cfg = EnnConfig(n=16, ratio=2, slots=3, residual_blocks=0, decoder_width=32, encoder_hidden=(),
                    activation="identity", steps=200, batch=64)
    return load_or_train(cfg, tmp_path_factory.mktemp("enn-linear"))[0].net


@pytest.mark.parametrize("side_info", [False, True])
def test_linear_enn_contributions_are_exact(linear_net, side_info):
    """A linear ENN: the clients' own contributions add up to the decoded sum exactly, so error
    feedback's residuals are exact; with side information too (code rescaling is exact)."""
    codec = EnnCodec(linear_net, scale=30.0, side_info=side_info, error_feedback=True)
    ups = _ups(3, 16 * 50 + 7, 1e-2, seed=9)
    numel = ups[0].numel()
    payloads = [codec.encode(u, seed=0, slot=i, rnd=4).payload for i, u in enumerate(ups)]
    agg = codec.aggregate(payloads, [1 / 3] * 3, [0, 1, 2], numel=numel)
    own = torch.stack([codec.own_contribution(p, i, numel) for i, p in enumerate(payloads)])
    offset = codec.offset(4)
    codes, rms, present = codec.silent_stack(numel, offset)
    for i, p in enumerate(payloads):
        rms[:, i] = codec.parse(p, numel, offset)[1]
    present[:3] = True
    bias = codec.unchunk(codec.decode_stack(codes, rms, present), numel, offset)
    torch.testing.assert_close(own.mean(0) + bias, agg, rtol=1e-4, atol=1e-4 * float(agg.abs().max()))
