"""The run's torch device: the ``guard`` placement catches host/device mix-ups on a CPU machine,
and every scheme runs under it with the same tables as on the CPU."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from fedsim.engine import run
from fedsim.models import build_model
from fedsim.placement import (
    DeviceTensor,
    DeviceUnavailableError,
    GuardedPlacement,
    resolve_placement,
)
from fedsim.scenario import ScenarioError, load_scenario
from fedsim.training import batch_schedule, evaluate, train_local

TINY = "scenarios/tiny.yaml"
KEYNET = ["model.pooling=avg", "encryption={kind: keynet, gains: power_of_two}"]
#: One small run per scheme family: the codecs, both KeyNet spaces (with QSGD on the plaintext),
#: ENN, momentum and weight decay, MobileNetV2 (BatchNorm buffers, dropout), and an attack.
SCHEMES = {
    "fedavg": [],
    "fedpaq": ["codec={kind: qsgd, levels: 7}", "training.local_epochs=null",
               "training.local_steps=3", "selection.clients_per_round=2",
               "selection.weighting=uniform"],
    "keynet_lowered_qsgd": [*KEYNET, "codec={kind: qsgd, levels: 7}"],
    "keynet_channel_server_init": ["model.pooling=avg", ("encryption={kind: keynet, space: channel, "
                                   "init_by: server, key_delivery: seed}")],
    "enn": ["codec={kind: enn, ratio: 4, pretrain: {steps: 20}}", "selection.weighting=uniform"],
    "momentum": ["training.momentum=0.9", "training.weight_decay=0.0005"],
    "mobilenet_v2": ["model={kind: mobilenet_v2, width_mult: 0.25}", "data.train_limit=40",
                     "data.test_limit=20", "rounds=1"],
    "attack": ["model={kind: lenet_dlg, init: uniform}", "rounds=1",
               ("attack={adversaries: [{kind: server}], mode: friendly, max_targets: 1, "
               "dlg: {outer_steps: 3}}")],
}


def _cfg(overrides: list[str], device: str):
    return load_scenario(TINY, [*overrides, f"compute.torch_device={device}"]).runs[0]


def _without_host(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[[c for c in frame.columns if "host" not in c]]


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_every_scheme_runs_under_the_device_guard_with_the_cpu_tables(scheme):
    guarded = run(_cfg(SCHEMES[scheme], "guard"))
    plain = run(_cfg(SCHEMES[scheme], "cpu"))
    assert guarded.info["torch_device"] == "guard" and plain.info["torch_device"] == "cpu"
    for table in ("rounds", "clients", "messages", "attacks"):
        pd.testing.assert_frame_equal(_without_host(getattr(guarded, table)),
                                      _without_host(getattr(plain, table)))


def test_auto_on_a_cpu_machine_is_the_cpu_run():
    if torch.cuda.is_available():
        pytest.skip("auto means cuda here")
    auto, cpu = run(_cfg([], "auto")), run(_cfg([], "cpu"))
    assert auto.info["torch_device"] == cpu.info["torch_device"] == "cpu"
    for table in ("rounds", "clients", "messages"):
        pd.testing.assert_frame_equal(_without_host(getattr(auto, table)),
                                      _without_host(getattr(cpu, table)))


def test_the_guard_rejects_a_host_input_to_a_device_model():
    place = GuardedPlacement()
    model = place.module(build_model("lenet5"))
    assert all(isinstance(p, DeviceTensor) for p in model.parameters())
    with pytest.raises(RuntimeError, match="device guard: conv2d"):
        model(torch.zeros(2, 1, 28, 28))
    out = model(place.tensor(torch.zeros(2, 1, 28, 28)))
    assert isinstance(out, DeviceTensor)
    assert not isinstance(out.cpu(), DeviceTensor) and not isinstance(out.detach().cpu(), DeviceTensor)


def test_the_guard_rejects_host_index_batches_a_gpu_would_copy_every_step():
    place = GuardedPlacement()
    model = place.module(build_model("lenet5"))
    x, y = place.tensor(torch.randn(40, 1, 28, 28)), place.tensor(torch.randint(0, 10, (40,)))
    batches = batch_schedule(40, batch_size=10, epochs=1, steps=None,
                             generator=torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError, match="device guard"):
        train_local(model, x, y, batches, lr=0.1)
    result = train_local(model, x, y, [place.tensor(b) for b in batches], lr=0.1, momentum=0.9)
    assert result.steps == 4 and result.samples == 40 and result.mean_loss > 0
    acc, loss = evaluate(model, x, y)
    assert 0 <= acc <= 1 and loss > 0


def test_device_names_are_validated():
    with pytest.raises(ValueError, match="unknown torch device"):
        resolve_placement("tpu")
    with pytest.raises(ScenarioError, match="compute.torch_device"):
        load_scenario(TINY, ["compute.torch_device=gpu"])
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailableError, match="no CUDA device"):
            resolve_placement("cuda:0")


def test_cli_device_flag(tmp_path):
    from fedsim.cli import main

    assert main(["run", TINY, "--device", "guard", "--quiet", "--out", str(tmp_path / "g")]) == 0
    info = (tmp_path / "g" / "run_info.json").read_text()
    assert '"torch_device": "guard"' in info
    with pytest.raises(SystemExit) as exc:
        main(["run", TINY, "--device", "gpu0", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    if not torch.cuda.is_available():
        assert main(["run", TINY, "--device", "cuda", "--out", str(tmp_path / "c")]) == 2
        assert not (tmp_path / "c").exists()
