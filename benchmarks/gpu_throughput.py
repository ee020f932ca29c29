"""Training throughput: fedsim against a bare eager loop and the single-model large-batch ceiling.

For each case (a scenario's first scheme), three variants train the same samples on the same
device:

* ``fedsim_sequential``, ``fedsim_batched`` and (with ``--compile``) ``fedsim_batched_compiled``:
  ``fedsim.engine.run`` for ``--rounds`` rounds with ``compute.trainer`` sequential or batched
  (``training.compile: true``); per-step time is the clients' summed ``host_train_s`` over their
  summed steps (rounds after the first, which pays for warm-up and compilation, when there are
  several); ``round_samples_per_s`` also counts everything else a round does on the host
  (serialization, codecs, the event loop).
* ``bare_eager``: the same clients, the same index batches (fedsim's seeds) and SGD settings in a
  plain PyTorch loop with device-resident data and indices: no simulation, no messages.
* ``ceiling``: one model, one pass over the same number of samples at ``--ceiling-batch``: what
  the device does when launches are large enough to fill it.

Usage (CSV to ``--out``; runs on CPU too, where the cases are shrunk with ``--train-limit``)::

    python benchmarks/gpu_throughput.py --device auto --rounds 2
    FEDSIM_DATA=../shared/datasets python benchmarks/gpu_throughput.py --cases scale100,mobilenet

Cases whose dataset is not on this machine are skipped with a message.
"""

from __future__ import annotations

import argparse
import copy
import csv
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fedsim import engine
from fedsim.config import RunConfig
from fedsim.data import DataError, partition
from fedsim.placement import Placement, resolve_placement
from fedsim.rng import numpy_rng, torch_generator
from fedsim.scenario import load_scenario
from fedsim.training import batch_schedule

#: case -> (scenario, scheme, training images on a CPU unless --train-limit says otherwise)
CASES = {
    "quickstart": ("scenarios/quickstart.yaml", "fedavg", 2000),
    "scale100": ("scenarios/scale100_mnist.yaml", "fedavg", 2000),
    "mobilenet": ("scenarios/thesis_table41_mobilenet.yaml", "fedavg", 256),
}
COLUMNS = ["case", "device", "variant", "batch_size", "clients", "steps", "samples", "seconds",
           "ms_per_step", "samples_per_s", "round_samples_per_s", "time_per_sample_vs_bare"]


def _sync(place: Placement) -> None:
    if place.is_cuda:
        torch.cuda.synchronize(place.device)


#: fedsim variants: name -> scenario overrides
VARIANTS = {
    "fedsim_sequential": ["compute.trainer=sequential"],
    "fedsim_batched": ["compute.trainer=batched"],
    "fedsim_batched_compiled": ["compute.trainer=batched", "training.compile=true"],
}


def _steps(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
           batches) -> None:
    """Plain eager SGD steps over device-resident index batches."""
    for rows in batches:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[rows]), y[rows]).backward()
        opt.step()


def fedsim_rows(cfg: RunConfig) -> dict:
    """Time fedsim's own training from its clients and rounds tables."""
    result = engine.run(cfg)
    clients, rounds = result.clients, result.rounds
    if cfg.rounds > 1:  # round 1 pays for allocator and kernel warm-up
        clients, rounds = clients[clients["round"] > 1], rounds[rounds["round"] > 1]
    seconds = float(clients["host_train_s"].sum())
    return {"steps": int(clients["steps"].sum()), "samples": int(clients["samples"].sum()),
            "seconds": seconds, "clients": int(clients["client"].nunique()),
            "round_samples_per_s": clients["samples"].sum() / rounds["host_seconds"].sum()}


def bare_rows(cfg: RunConfig, place: Placement, rounds: range) -> dict:
    """The same clients' local training in a plain eager loop (one warm-up client first)."""
    data = engine.get_dataset(cfg)
    model = place.module(engine.build_initial_model(cfg, data))
    x, y = place.tensor(data.x_train), place.tensor(data.y_train)
    parts = partition(data.y_train.numpy(), cfg.data.num_clients, cfg.data.partition.kind,
                      rng=numpy_rng(cfg.seed, "partition"),
                      classes_per_client=cfg.data.partition.classes_per_client,
                      alpha=cfg.data.partition.alpha)
    t = cfg.training
    start = copy.deepcopy(model.state_dict())
    jobs = []  # (device index batches) per client-round, built before timing
    for rnd in rounds:
        for cid, part in enumerate(parts):
            idx = torch.as_tensor(part, dtype=torch.long)
            gen = torch_generator(cfg.seed, "client", cid, "batches", rnd)
            batches = batch_schedule(len(idx), batch_size=t.batch_size, epochs=t.local_epochs,
                                     steps=t.local_steps, generator=gen)
            order = place.tensor(idx[torch.cat(batches)])
            jobs.append(order.split([len(b) for b in batches]))

    def train(batches) -> None:
        model.load_state_dict(start)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum,
                              weight_decay=t.weight_decay)
        _steps(model, opt, x, y, batches)

    train(jobs[0])
    _sync(place)
    t0 = time.perf_counter()
    for batches in jobs:
        train(batches)
    _sync(place)
    return {"steps": sum(len(b) for b in jobs), "samples": sum(len(r) for b in jobs for r in b),
            "seconds": time.perf_counter() - t0, "clients": len(parts)}


def ceiling_rows(cfg: RunConfig, place: Placement, samples: int, batch: int) -> dict:
    """One model, ``samples`` samples in batches of ``batch`` (one warm-up step first)."""
    data = engine.get_dataset(cfg)
    model = place.module(engine.build_initial_model(cfg, data)).train()
    x, y = place.tensor(data.x_train), place.tensor(data.y_train)
    gen = torch.Generator().manual_seed(0)
    n = len(y)
    steps = max(samples // batch, 1)
    order = place.tensor(torch.randint(0, n, (steps + 1, min(batch, n)), generator=gen))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.training.lr)
    _steps(model, opt, x, y, order[:1])
    _sync(place)
    t0 = time.perf_counter()
    _steps(model, opt, x, y, order[1:])
    _sync(place)
    return {"steps": steps, "samples": steps * order.shape[1], "seconds": time.perf_counter() - t0,
            "clients": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="quickstart,scale100,mobilenet",
                        help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--rounds", type=int, default=2, help="fedsim rounds per case")
    parser.add_argument("--train-limit", type=int, default=None,
                        help="training images per case (default: all on CUDA; on a CPU 2,000, "
                             "or 256 for mobilenet)")
    parser.add_argument("--ceiling-batch", type=int, default=1024)
    parser.add_argument("--compile", action="store_true",
                        help="also time fedsim_batched_compiled (slow to compile on a CPU)")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch CPU threads")
    parser.add_argument("--out", default="benchmarks/results/gpu_throughput.csv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    place = resolve_placement(args.device)
    rows = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for case in args.cases.split(","):
        path, scheme, cpu_limit = CASES[case]
        limit = args.train_limit or (None if place.is_cuda else cpu_limit)
        sets = [f"rounds={args.rounds}", f"compute.torch_device={args.device}"]
        sets += [f"data.train_limit={limit}", "data.test_limit=1000"] if limit else []
        cfg = next(r for r in load_scenario(path, sets).runs if r.scheme == scheme)
        try:
            engine.get_dataset(cfg)
        except DataError as exc:
            print(f"{case}: skipped ({exc})")
            continue
        variants = [v for v in VARIANTS if args.compile or "compiled" not in v]
        measured = {v: fedsim_rows(next(r for r in load_scenario(path, sets + VARIANTS[v]).runs
                                        if r.scheme == scheme)) for v in variants}
        timed = range(2, args.rounds + 1) if args.rounds > 1 else range(1, 2)
        measured["bare_eager"] = bare_rows(cfg, place, timed)
        measured["ceiling"] = ceiling_rows(cfg, place, measured["bare_eager"]["samples"],
                                           args.ceiling_batch)
        bare = measured["bare_eager"]["seconds"] / measured["bare_eager"]["samples"]
        for variant, m in measured.items():
            batch = args.ceiling_batch if variant == "ceiling" else cfg.training.batch_size
            ms = 1e3 * m["seconds"] / m["steps"]
            rows.append({"case": case, "device": str(place.device), "variant": variant,
                         "batch_size": batch, **m, "ms_per_step": ms,
                         "samples_per_s": m["samples"] / m["seconds"],
                         "round_samples_per_s": m.get("round_samples_per_s", float("nan")),
                         "time_per_sample_vs_bare": m["seconds"] / m["samples"] / bare})
            r = rows[-1]
            print(f"{case:10s} {variant:18s} B={batch:<5d} {r['ms_per_step']:8.2f} ms/step "
                  f"{r['samples_per_s']:10.0f} samples/s  x{r['time_per_sample_vs_bare']:.2f} "
                  "bare's time per sample", flush=True)
        with out.open("w", newline="") as f:  # after every case: partial results survive
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
