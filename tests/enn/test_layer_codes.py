"""ENN with layer-aligned linear codes refitted every round (``structure: layers``)."""

from __future__ import annotations

import math
import struct

import pandas as pd
import pytest
import torch

from fedsim import engine
from fedsim.codecs.enn import EnnCodecConfig
from fedsim.codecs.enn_layers import EnnLayerCodec
from fedsim.codecs.factory import make_codec
from fedsim.enn.layer_code import code_rank, coded_entries, fit_bases, layer_views
from fedsim.enn.metrics import average_fidelity
from fedsim.enn.proxy import EnnProxyConfig, flatten_state
from fedsim.models import build_model
from fedsim.scenario import load_scenario
from fedsim.wire import pack_vector, unpack_vector

#: a quick proxy: 6 proxy clients, 3 trained per refit, one epoch
PROXY = EnnProxyConfig(clients=6, per_round=3, local_epochs=1)


def _codec(ratio: int = 4, ef: bool = False, kind: str = "lenet5") -> EnnLayerCodec:
    torch.manual_seed(0)
    return EnnLayerCodec(build_model(kind), ratio=ratio, proxy=PROXY, error_feedback=ef)


def _updates(codec: EnnLayerCodec, k: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    numel = sum(math.prod(s) for s in codec.shapes)
    return [torch.randn(numel, generator=gen) * 1e-2 for _ in range(k)]


def test_coded_entries_and_bases_are_orthonormal():
    shapes = [(6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,), (120, 400), (120,), (84, 120), (84,),
              (10, 84), (10,)]
    coded = coded_entries(shapes, 4)
    # biases never; the first conv has 6 rows (and saves < 1 % of the 61,706 values), the
    # output layer 10 rows
    assert coded == [False, False, True, False, True, False, True, False, False, False]
    gen = torch.Generator().manual_seed(1)
    samples = torch.randn(5, sum(math.prod(s) for s in shapes), generator=gen)
    bases = fit_bases(samples, shapes, 4, previous=samples[0])
    for shape, u, c in zip(shapes, bases, coded):
        assert (u is not None) == c
        if u is not None:
            assert u.shape == (shape[0], code_rank(shape[0], 4))
            torch.testing.assert_close(u.T @ u, torch.eye(u.shape[1]), atol=1e-5, rtol=0)


def test_basis_is_the_top_principal_subspace():
    """One sample of rank r: the fitted code keeps it exactly; a direction orthogonal to it is lost."""
    gen = torch.Generator().manual_seed(2)
    left = torch.linalg.qr(torch.randn(40, 40, generator=gen))[0]
    m = left[:, :10] @ torch.randn(10, 30, generator=gen)
    bases = fit_bases(m.reshape(1, -1), [(40, 30)], 4)
    u = bases[0]
    torch.testing.assert_close(u @ (u.T @ m), m, atol=1e-4, rtol=0)
    off = left[:, 20:21] @ torch.randn(1, 30, generator=gen)
    assert float((u @ (u.T @ off)).norm()) < 1e-4 * float(off.norm())


def test_round_codes_come_only_from_the_model_and_the_proxy():
    """Two servers with the same global model and round fit the same codes (nothing else enters)."""
    a, b = _codec(), _codec()
    flat = flatten_state(build_model("lenet5"))
    pa, pb = a.round_payload(1, flat), b.round_payload(1, flat)
    assert pa == pb
    assert len(pa) == len(pack_vector(unpack_vector(pa)))
    n_code = sum(u.numel() for u in a.bases(1) if u is not None)
    assert unpack_vector(pa).numel() == n_code
    assert a.round_payload(2, flat + 1e-3) != pa  # refitted: another model, another round


def test_payload_size_is_exact_and_the_mean_is_linear():
    codec = _codec()
    flat = flatten_state(build_model("lenet5"))
    codec.round_payload(1, flat)
    ups = _updates(codec, 3, seed=3)
    numel = ups[0].numel()
    payloads = [codec.encode(u, seed=0, slot=i, rnd=1).payload for i, u in enumerate(ups)]
    expected = 12 + 4 * sum(
        code_rank(s[0], 4) * (math.prod(s) // s[0]) if c else math.prod(s)
        for s, c in zip(codec.shapes, coded_entries(codec.shapes, 4)))
    assert {len(p) for p in payloads} == {expected} == {codec.encoded_nbytes(numel, 1)}
    assert struct.unpack_from("<2sHII", payloads[0]) == (b"EL", 4, numel, 1)
    assert 3.5 < 4 * numel / expected < 4.0
    w = [0.5, 0.3, 0.2]
    agg = codec.aggregate(payloads, w, [0, 1, 2], numel=numel)
    each = sum(wi * codec.decode(p, numel=numel) for wi, p in zip(w, payloads))
    torch.testing.assert_close(agg, each, atol=1e-7, rtol=1e-5)
    # decoding is the projection U U^T per coded matrix; uncoded entries pass unchanged
    for u, d, x in zip(codec.bases(1), layer_views(codec.decode(payloads[0], numel=numel),
                                                   codec.shapes), layer_views(ups[0], codec.shapes)):
        want = x if u is None else u @ (u.T @ x)
        torch.testing.assert_close(d, want, atol=1e-6, rtol=1e-5)


def test_mismatched_payloads_are_refused():
    codec = _codec()
    flat = flatten_state(build_model("lenet5"))
    codec.round_payload(1, flat)
    codec.round_payload(2, flat)
    numel = flat.numel()
    p1 = codec.encode(flat * 0 + 1e-3, seed=0, slot=0, rnd=1).payload
    p2 = codec.encode(flat * 0 + 1e-3, seed=0, slot=1, rnd=2).payload
    with pytest.raises(ValueError, match="several rounds"):
        codec.aggregate([p1, p2], [0.5, 0.5], [0, 1], numel=numel)
    with pytest.raises(ValueError, match="bytes"):
        codec.aggregate([p1[:-4]], [1.0], [0], numel=numel)
    with pytest.raises(ValueError, match="no ENN layer codes for round 3"):
        codec.encode(flat, seed=0, slot=0, rnd=3)


def test_error_feedback_telescopes():
    """Sum of what the server decodes from one client + its last residual = sum of its updates."""
    codec = _codec(ef=True)
    client = codec.for_client(0)
    flat = flatten_state(build_model("lenet5"))
    ups = _updates(codec, 4, seed=4)
    decoded = torch.zeros_like(flat)
    for rnd, u in enumerate(ups, start=1):
        codec.round_payload(rnd, flat)
        enc = client.encode(u, seed=0, slot=0, rnd=rnd)
        assert 0 < enc.metrics["ef_rel_error"] < 1
        decoded += codec.aggregate([enc.payload], [1.0], [0], numel=flat.numel())
        flat = flat + 1e-3
    torch.testing.assert_close(decoded + client.residual, torch.stack(ups).sum(0),
                               atol=1e-5, rtol=1e-5)


def test_config_rules():
    cfg = EnnCodecConfig.model_validate({"kind": "enn", "structure": "layers", "ratio": 8})
    codec = make_codec(cfg, slots=9, model=build_model("mlp"))
    assert isinstance(codec, EnnLayerCodec) and codec.ratio == 8
    with pytest.raises(ValueError, match="side_info does not apply"):
        EnnCodecConfig.model_validate({"kind": "enn", "structure": "layers", "side_info": True})
    with pytest.raises(ValueError, match="needs the initial model"):
        make_codec(cfg, slots=9, model=None)
    # LeNet-Zhu: 12-channel convolutions, a 10-class output layer
    with pytest.raises(ValueError, match="codes no weight matrix.*most rows is 12.*lower min_rows"):
        make_codec(cfg, slots=9, model=build_model("lenet_dlg"))
    low = cfg.model_copy(update={"min_rows": 12})
    zhu = make_codec(low, slots=9, model=build_model("lenet_dlg"))
    assert zhu.coded == [True, False, True, False, True, False, False, False]


def _layers_run(extra: list[str]):
    return load_scenario("scenarios/quickstart.yaml", [
        "rounds=2", "data.num_clients=6", "selection.clients_per_round=3", "data.train_limit=600",
        ("codec={kind: enn, ratio: 4, structure: layers, error_feedback: true, "
         "pretrain: {proxy: {clients: 6, per_round: 3, local_epochs: 1}}}"), *extra]).runs[0]


def test_simulation_sends_the_codes_each_round_and_is_deterministic():
    cfg = _layers_run([])
    a, b = engine.run(cfg), engine.run(cfg)
    for table in ("rounds", "clients", "messages"):
        x, y = getattr(a, table), getattr(b, table)
        cols = [c for c in x.columns if "host" not in c]
        pd.testing.assert_frame_equal(x[cols], y[cols])
    msgs = a.messages
    codes = msgs[msgs["kind"] == "codec_round"]
    assert len(codes) == 2 * 3 and codes["bytes"].nunique() == 1  # every selected client, per round
    down = msgs[msgs["kind"].isin(["model_down", "codec_round"])].groupby("round")["bytes"].sum()
    played = a.rounds.set_index("round").loc[[1, 2], "bytes_down"]
    assert (played.values == down.loc[[1, 2]].values).all()
    ups = msgs[msgs["kind"] == "update_up"]
    assert ups["bytes"].max() * 3.5 < 4 * a.info["wire_numel"]
    assert a.rounds["test_accuracy"].notna().all()


def test_cosine_on_trained_updates_beats_the_chunk_code_ceiling():
    """Real LeNet-5 updates of 3 i.i.d. clients: the refitted code keeps most of the mean's direction."""
    cfg = _layers_run([])
    from fedsim.enn.fidelity import RealClients

    clients = RealClients(cfg)
    codec = make_codec(cfg.codec, slots=3, model=clients.model)
    flat = clients.initial()
    codec.round_payload(1, flat)
    _, ups = clients.train_round(1, flat)
    payloads = [codec.encode(u, seed=0, slot=i, rnd=1).payload for i, u in enumerate(ups)]
    decoded = codec.aggregate(payloads, [1 / 3] * 3, [0, 1, 2], numel=flat.numel())
    assert average_fidelity(decoded, ups.mean(0))["cosine"] > 0.8
