"""ENN network, pre-training, cache and measurement helpers."""

from __future__ import annotations

import pytest
import torch

import fedsim.enn.cache as cache_mod
from fedsim.enn import (
    EnnConfig,
    EnnNet,
    approximation_mse,
    average_fidelity,
    linear_bound_mse,
    load_or_train,
    train_enn,
    zero_baseline_mse,
)
from fedsim.enn.pretrain import init_net


def test_shapes_and_sizes():
    cfg = EnnConfig(n=32, ratio=4, slots=5, residual_blocks=2, decoder_width=48, encoder_hidden=(20,))
    net = EnnNet(cfg)
    assert net.encode(torch.zeros(7, 32)).shape == (7, 8)
    assert net.decode_mean(torch.zeros(7, 5, 8)).shape == (7, 32)
    assert net(torch.zeros(2, 7, 5, 32)).shape == (2, 7, 32)
    enc_params = sum(p.numel() for p in net.encoder.parameters())
    assert enc_params == 32 * 20 + 20 + 20 * 8 + 8
    assert sum(isinstance(m, torch.nn.Linear) for m in net.decoder) == 2
    assert len(net.decoder) == 2 + 2 + 2  # stem, act, 2 blocks, act, head


def test_config_validation_and_key():
    with pytest.raises(ValueError):
        EnnConfig(n=30, ratio=4)
    with pytest.raises(ValueError):
        EnnConfig(scheme="both")
    assert EnnConfig().key() == EnnConfig().key()
    assert EnnConfig(seed=1).key() != EnnConfig().key()
    assert EnnConfig(encoder_hidden=[64]).key() == EnnConfig(encoder_hidden=(64,)).key()


def test_trained_beats_zero_baseline(small_net, small_config):
    mse = approximation_mse(small_net, groups=4_000)
    zero = zero_baseline_mse(small_config.sample_var, small_config.slots)
    bound = linear_bound_mse(small_config.n, small_config.m, small_config.sample_var, small_config.slots)
    assert zero == pytest.approx(0.1 / 3) and bound == pytest.approx(0.5 * 0.1 / 3)
    assert mse < 0.7 * zero


def test_untrained_does_not_beat_zero(small_config):
    assert approximation_mse(init_net(small_config), groups=2_000) > 0.9 * zero_baseline_mse(0.1, 3)


@pytest.mark.parametrize("scheme,frozen", [("freeze_decoder", "decoder"), ("freeze_encoder", "encoder")])
def test_freeze_schemes_keep_random_weights(scheme, frozen):
    cfg = EnnConfig(n=8, ratio=2, slots=2, residual_blocks=1, decoder_width=16, encoder_hidden=(8,),
                    steps=5, batch=8, scheme=scheme)
    init, trained = init_net(cfg), train_enn(cfg).net
    trained_part = "encoder" if frozen == "decoder" else "decoder"
    for a, b in zip(getattr(init, frozen).parameters(), getattr(trained, frozen).parameters()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(getattr(init, trained_part).parameters(),
                                                    getattr(trained, trained_part).parameters()))


def test_training_is_deterministic():
    cfg = EnnConfig(n=8, ratio=2, slots=2, residual_blocks=1, decoder_width=16, encoder_hidden=(8,),
                    steps=10, batch=8)
    a, b = train_enn(cfg).net.state_dict(), train_enn(cfg).net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cache_hit_returns_identical_weights_without_training(tmp_path, monkeypatch):
    cfg = EnnConfig(n=8, ratio=2, slots=2, residual_blocks=0, decoder_width=16, encoder_hidden=(8,),
                    steps=10, batch=8)
    first, cached = load_or_train(cfg, tmp_path)
    assert not cached and len(list(tmp_path.glob("enn-*.pt"))) == 1
    assert not list(tmp_path.glob("*.tmp"))

    def no_training(config):
        raise AssertionError("cache hit must not retrain")

    monkeypatch.setattr(cache_mod, "train_enn", no_training)
    second, cached = load_or_train(cfg, tmp_path)
    assert cached and second.final_loss == first.final_loss
    s1, s2 = first.net.state_dict(), second.net.state_dict()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)


def test_cache_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path))
    assert cache_mod.cache_dir() == tmp_path
    monkeypatch.delenv("FEDSIM_CACHE")
    assert cache_mod.cache_dir().parts[-3:] == (".cache", "fedsim", "enn")


def test_average_fidelity():
    t = torch.tensor([1.0, 0.0, 0.0])
    assert average_fidelity(t, t) == {"cosine": pytest.approx(1.0), "rel_error": pytest.approx(0.0)}
    f = average_fidelity(torch.tensor([0.0, 1.0, 0.0]), t)
    assert f["cosine"] == pytest.approx(0.0) and f["rel_error"] == pytest.approx(2 ** 0.5)


@pytest.mark.slow
def test_default_end_to_end_near_linear_bound():
    cfg = EnnConfig()
    mse = approximation_mse(train_enn(cfg).net, groups=5_000)
    bound = linear_bound_mse(cfg.n, cfg.m, cfg.sample_var, cfg.slots)
    assert mse < 1.1 * bound


def _flip_byte(p):
    blob = bytearray(p.read_bytes())
    blob[-50] ^= 0x01
    p.write_bytes(bytes(blob))


@pytest.mark.parametrize(("damage", "reason"), [
    (_flip_byte, "checksum mismatch"),
    (lambda p: p.write_bytes(p.read_bytes()[:-10]), "truncated"),
    (lambda p: p.write_bytes(b"PK\x03\x04 a torch.save zip from an older fedsim"),
     "not a fedsim cache"),
], ids=["flipped_byte", "truncated", "old_format"])
def test_damaged_cache_is_retrained_with_one_warning(damage, reason, tmp_path, caplog):
    cfg = EnnConfig(n=8, ratio=2, slots=2, residual_blocks=0, decoder_width=16, encoder_hidden=(8,),
                    steps=10, batch=8)
    first, _ = load_or_train(cfg, tmp_path)
    (path,) = tmp_path.glob("enn-*.pt")
    damage(path)
    caplog.clear()
    again, cached = load_or_train(cfg, tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert not cached and len(warnings) == 1 and reason in warnings[0], warnings
    s1, s2 = first.net.state_dict(), again.net.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)  # retrained deterministically
    assert load_or_train(cfg, tmp_path)[1]  # and the cache is whole again


def test_foreign_cache_payload_is_retrained(tmp_path, caplog):
    small = EnnConfig(n=8, ratio=2, slots=2, residual_blocks=0, decoder_width=16,
                      encoder_hidden=(8,), steps=10, batch=8)
    other = EnnConfig(n=8, ratio=2, slots=2, residual_blocks=0, decoder_width=8,
                      encoder_hidden=(8,), steps=10, batch=8)
    load_or_train(other, tmp_path / "o")
    (src,) = (tmp_path / "o").glob("enn-*.pt")
    payload = cache_mod.read_cache(src, "enn", other.key())
    cache_mod.write_cache(cache_mod.cache_path(small, tmp_path), "enn", small.key(), payload)
    caplog.clear()
    _, cached = load_or_train(small, tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert not cached and len(warnings) == 1 and "another ENN config" in warnings[0]


def test_unwritable_cache_folder_trains_in_memory(tmp_path, caplog):
    (tmp_path / "file").write_text("x")
    cfg = EnnConfig(n=8, ratio=2, slots=2, residual_blocks=0, decoder_width=16, encoder_hidden=(8,),
                    steps=10, batch=8)
    result, cached = load_or_train(cfg, tmp_path / "file" / "cache")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert not cached and result.net is not None
    assert len(warnings) == 1 and "in memory only" in warnings[0]
