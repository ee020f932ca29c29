"""Plug-ins by registry: a codec defined here, and registered here only, works end to end.

The toy codec sends each update as float16 (2 bytes per coordinate plus a 4-byte count). No
other file knows it: registering it makes it usable from a scenario file and puts it in the
attack table, and unregistering removes it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch

from fedsim import engine
from fedsim.codecs.base import CodecContext, EncodedUpdate, UpdateCodec
from fedsim.config import CodecSettings, RunConfig
from fedsim.config.registry import ADVERSARIES, CODECS, MODELS, Registry
from fedsim.plugins import registry_table
from fedsim.scenario import ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "scenarios" / "tiny.yaml"


class ToyHalfConfig(CodecSettings):
    """``codec: {kind: toy_half}``: float16 updates."""

    kind: Literal["toy_half"]


class ToyHalfCodec(UpdateCodec):
    name = "toy_half"

    def encode(self, update: torch.Tensor, *, seed: int, slot: int, rnd: int = 0) -> EncodedUpdate:
        body = update.detach().cpu().to(torch.float16).numpy().astype("<f2").tobytes()
        return EncodedUpdate(np.uint32(update.numel()).tobytes() + body,
                             {"bits_per_coord": 16.0 + 32.0 / update.numel()})

    def decode(self, payload: bytes, *, numel: int) -> torch.Tensor:
        if int(np.frombuffer(payload[:4], "<u4")[0]) != numel:
            raise ValueError("toy_half payload has the wrong length")
        return torch.from_numpy(np.frombuffer(payload[4:], "<f2").astype(np.float32))

    def aggregate(self, payloads: Sequence[bytes], weights: Sequence[float], slots: Sequence[int],
                  *, numel: int) -> torch.Tensor:
        total = torch.zeros(numel, dtype=torch.float64)
        for payload, w in zip(payloads, weights, strict=True):
            total += w * self.decode(payload, numel=numel).double()
        return total.float()


def make_toy(cfg: ToyHalfConfig, ctx: CodecContext) -> ToyHalfCodec:
    return ToyHalfCodec()


@pytest.fixture
def toy_codec():
    CODECS.register(ToyHalfConfig, make_toy)
    yield
    CODECS.unregister(ToyHalfConfig)


def _scenario(tmp_path: Path, extra: str, **replace: str) -> Path:
    """tiny.yaml without its schemes, lines starting ``key:`` replaced, plus ``extra``."""
    lines = [f"{k}: {replace[k]}" if k in replace else line for line in TINY.read_text().splitlines()
             if (k := line.split(":")[0]) and not line.startswith(("schemes:", "  fedavg:"))]
    path = tmp_path / "toy.yaml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def test_toy_codec_runs_from_a_scenario_file(toy_codec, tmp_path):
    path = _scenario(tmp_path, "schemes:\n  half: {codec: {kind: toy_half}}\n  fp32: {}\n")
    half, fp32 = load_scenario(path).runs
    assert isinstance(half.codec, ToyHalfConfig) and half.codec.kind == "toy_half"
    res, ref = engine.run(half), engine.run(fp32)
    up = res.messages[res.messages["kind"] == "update_up"]
    up_ref = ref.messages[ref.messages["kind"] == "update_up"]
    assert len(up) == len(up_ref) == 2 * 4  # 2 rounds x 4 clients
    # 2 bytes per coordinate instead of 4 (plus headers): the toy codec is what went on the wire
    ratio = up["bytes"].sum() / up_ref["bytes"].sum()
    assert 0.49 < ratio < 0.51
    acc = res.rounds["test_accuracy"].iloc[-1]
    assert abs(acc - ref.rounds["test_accuracy"].iloc[-1]) < 0.05  # float16 barely changes it


def test_toy_codec_in_the_attack_table(toy_codec, tmp_path):
    attack = """attack:
  adversaries: [{kind: server}, {kind: eavesdropper, links: ["client/0:up", "client/0:down"]}]
  rounds: [1]
  clients: [0]
  mode: friendly
  batch_size: 1
  dlg: {outer_steps: 2}
  grid_images: 0
"""
    path = _scenario(tmp_path, attack + "schemes:\n  half: {codec: {kind: toy_half}}\n",
                     rounds="1", model="{kind: lenet_dlg, init: uniform}")
    (cfg,) = load_scenario(path).runs
    table = engine.run(cfg).attacks
    assert list(table["adversary"]) == ["server", "eavesdropper"]
    assert (table["status"] == "attacked").all() and (table["scheme"] == "half").all()
    assert table["obs_cosine"].min() > 0.99  # float16 keeps the observed update


def test_unknown_kind_lists_the_registered_ones(toy_codec, tmp_path):
    with pytest.raises(ScenarioError, match=r"codec\.kind: unknown kind 'nope'; expected one of .*'toy_half'"):
        load_scenario(_scenario(tmp_path, "codec: {kind: nope}\n"))


def test_unregister_removes_the_kind(tmp_path):
    CODECS.register(ToyHalfConfig, make_toy)
    assert "toy_half" in CODECS
    CODECS.unregister(ToyHalfConfig)
    assert "toy_half" not in CODECS.kinds()
    with pytest.raises(ScenarioError, match="unknown kind 'toy_half'"):
        load_scenario(_scenario(tmp_path, "codec: {kind: toy_half}\n"))


def test_a_kind_is_registered_once():
    with pytest.raises(ValueError, match="codec kind 'identity' is already registered"):
        CODECS.register(type(RunConfig().codec), make_toy)


def test_registry_needs_a_literal_kind():
    with pytest.raises(TypeError, match="kind: Literal"):
        Registry("thing").register(CodecSettings, make_toy)


def test_builtin_kinds_and_their_plugin_classes():
    assert set(CODECS.kinds()) == {"identity", "qsgd", "enn"}
    assert set(ADVERSARIES.kinds()) == {"eavesdropper", "server", "adaptive_server", "key_agent"}
    assert ADVERSARIES.factory("eavesdropper").holds_decoder is False
    assert ADVERSARIES.factory("key_agent").holds_keys is True


def test_docs_table_is_the_registry():
    """docs/PLUGINS.md lists exactly the registered kinds (regenerate with registry_table())."""
    doc = (ROOT / "docs" / "PLUGINS.md").read_text()
    assert registry_table() in doc


def test_a_registered_model_builds_from_a_scenario(tmp_path):
    from torch import nn

    from fedsim.models import ModelArgs

    def tiny_linear(a: ModelArgs) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(a.in_features, a.num_classes))

    MODELS.register("tiny_linear", tiny_linear)
    try:
        (cfg,) = load_scenario(_scenario(tmp_path, "", model="{kind: tiny_linear}")).runs
        data = engine.get_dataset(cfg)
        model = engine.build_initial_model(cfg, data)
        assert sum(p.numel() for p in model.parameters()) == 784 * 10 + 10
    finally:
        MODELS.unregister("tiny_linear")
    with pytest.raises(ScenarioError, match="model.kind: Input should be 'lenet5'"):
        load_scenario(_scenario(tmp_path, "", model="{kind: tiny_linear}"))
