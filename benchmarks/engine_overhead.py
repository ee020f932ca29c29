"""Engine overhead: a scenario through fedsim vs. a bare PyTorch FedAvg loop doing the same training.

The bare loop trains exactly what fedsim trains: the same initial model
(:func:`fedsim.engine.build_initial_model`), the same client partition, the same index batches
(:func:`fedsim.training.batch_schedule` with each client's per-round generator), the same SGD
settings, FedAvg weighted by sample counts, and one test-set evaluation per evaluated round. It
has no simulated time, messages, serialization or tables. Runs alternate (fedsim, bare, fedsim,
...) so both see the same machine load. Usage::

    python benchmarks/engine_overhead.py [--scenario scenarios/quickstart.yaml] [--repeats 3]

Prints the median wall and process-CPU seconds of each and the ratio fedsim / bare (target:
<= 1.10). Only full participation without dropout or unavailability is supported (the bare loop
does not select clients).
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
import torch.nn.functional as F
from scenario_args import parse_scenario_args

from fedsim import engine
from fedsim.config import RunConfig
from fedsim.data import partition
from fedsim.rng import numpy_rng, torch_generator
from fedsim.scenario import load_scenario
from fedsim.training import batch_schedule


def bare_fedavg(cfg: RunConfig) -> float:
    """Plain-PyTorch FedAvg with fedsim's seeds; returns the final test accuracy in [0, 1]."""
    data = engine.get_dataset(cfg)
    model = engine.build_initial_model(cfg, data)
    parts = partition(data.y_train.numpy(), cfg.data.num_clients, cfg.data.partition.kind,
                      rng=numpy_rng(cfg.seed, "partition"),
                      classes_per_client=cfg.data.partition.classes_per_client,
                      alpha=cfg.data.partition.alpha)
    parts = [torch.as_tensor(p, dtype=torch.long) for p in parts]
    weights = torch.tensor([len(p) for p in parts], dtype=torch.float64)
    weights = (weights / weights.sum()).tolist()
    t = cfg.training
    acc = evaluate(model, data.x_test, data.y_test)
    for rnd in range(1, cfg.rounds + 1):
        global_state = {k: v.clone() for k, v in model.state_dict().items()}
        new_state = {k: torch.zeros_like(v) for k, v in global_state.items()}
        for cid, idx in enumerate(parts):
            model.load_state_dict(global_state)
            model.train()
            opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum,
                                  weight_decay=t.weight_decay)
            gen = torch_generator(cfg.seed, "client", cid, "batches", rnd)
            for b in batch_schedule(len(idx), batch_size=t.batch_size, epochs=t.local_epochs,
                                    steps=t.local_steps, generator=gen):
                rows = idx[b]
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(data.x_train[rows]), data.y_train[rows]).backward()
                opt.step()
            for k, v in model.state_dict().items():
                new_state[k] += weights[cid] * v
        model.load_state_dict(new_state)
        if rnd % cfg.eval_every == 0 or rnd == cfg.rounds:
            acc = evaluate(model, data.x_test, data.y_test)
    return acc


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Test accuracy in [0, 1]; in batches of 1000 with the loss too, as fedsim evaluates."""
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(y), 1000):
        out = model(x[i:i + 1000])
        loss += float(F.cross_entropy(out, y[i:i + 1000], reduction="sum"))
        correct += int((out.argmax(1) == y[i:i + 1000]).sum())
    return correct / len(y)


def fedsim_run(cfg: RunConfig) -> float:
    """One fedsim run; returns its final test accuracy."""
    rounds = engine.run(cfg).rounds
    return float(rounds["test_accuracy"].dropna().iloc[-1])


def main() -> None:
    args = parse_scenario_args(__doc__.splitlines()[0], threads=1)
    cfg = load_scenario(args.scenario, args.overrides).runs[0]
    if (cfg.clients_per_round() != cfg.data.num_clients or cfg.selection.overcommit != 1
            or cfg.availability.p_dropout or cfg.availability.p_unavailable
            or cfg.codec.kind != "identity" or cfg.encryption.kind != "none"):
        print(f"{args.scenario}: the bare loop covers full participation, fp32 updates, no "
              "encryption only", file=sys.stderr)
        raise SystemExit(2)
    engine.get_dataset(cfg)  # decode the dataset once (cached in-process) before timing
    runners = {"fedsim": fedsim_run, "bare": bare_fedavg}
    wall: dict[str, list[float]] = {k: [] for k in runners}
    cpu: dict[str, list[float]] = {k: [] for k in runners}
    for rep in range(args.repeats):
        for name, fn in runners.items():
            w0, c0 = time.perf_counter(), time.process_time()
            acc = fn(cfg)
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
            print(f"run {rep + 1} {name:6s}: wall {wall[name][-1]:7.2f} s  "
                  f"cpu {cpu[name][-1]:7.2f} s  final accuracy {acc:.4f}", flush=True)
    med = {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in runners}
    for name, (w, c) in med.items():
        print(f"median {name:6s}: wall {w:7.2f} s  cpu {c:7.2f} s")
    print(f"ratio fedsim/bare: wall {med['fedsim'][0] / med['bare'][0]:.3f}  "
          f"cpu {med['fedsim'][1] / med['bare'][1]:.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()
