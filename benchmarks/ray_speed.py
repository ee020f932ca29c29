"""Local against Ray backend: host seconds per 100-client round, Ray's fixed start-up cost, and
whether the tables are identical.

Runs ``scenarios/scale100_mnist.yaml`` (LeNet-5, 100 IID clients on full MNIST, every client
every round) on the local backend with one PyTorch thread and on ``--actors`` Ray actors of one
thread each, alternated (local, ray, local, ray, ...) so both see the same machine load. Each Ray
run starts its own local Ray instance, as ``fedsim run`` does. Usage::

    FEDSIM_DATA=/work/shared/datasets python benchmarks/ray_speed.py [--repeats 2] [--rounds 2]
        [--actors 2] [--trainer sequential] [--out results/ray_speed.csv] [--set KEY=VALUE ...]

CSV columns: ``repeat``, ``backend``, ``trainer``, ``actors`` (0 for local),
``host_s_per_round`` (mean of the rounds table's ``host_seconds`` over rounds 1..R: everything the
driver does in a round, waiting for the actors included), ``setup_s`` (``run()`` start to the
first event; on Ray it includes the two next columns), ``ray_connect_s`` (starting the local Ray
instance), ``ray_actors_start_s`` (putting the training set in the object store and building the
actors), ``run_s`` (the whole ``run()``), ``load_1m`` (the machine's 1-minute load average before
the run), ``identical_tables`` (Ray rows: the rounds, clients and messages tables, host-time
columns dropped, equal the local run of the same repeat), ``final_accuracy``. The CSV is
rewritten after each run; the medians and speed-ups are printed at the end.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd
import torch

from fedsim import engine
from fedsim.scenario import load_scenario

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "scale100_mnist.yaml"


def _host_free(result: engine.RunResult) -> list[pd.DataFrame]:
    host = [c for c in result.clients.columns if c.startswith("host_")]
    return [result.rounds.drop(columns=["host_seconds", "eval_host_seconds"]),
            result.clients.drop(columns=host), result.messages]


def _same(a: engine.RunResult, b: engine.RunResult) -> bool:
    return all(x.equals(y) for x, y in zip(_host_free(a), _host_free(b), strict=True))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--trainer", choices=("sequential", "batched"), default="sequential",
                   help="compute.trainer on both backends (sequential is the faster on one CPU "
                        "thread for LeNet-5 at B=32)")
    p.add_argument("--out", default="results/ray_speed.csv")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    torch.set_num_threads(1)
    base = [f"rounds={args.rounds}", f"eval_every={args.rounds}",
            f"compute.trainer={args.trainer}", *args.sets]
    cfgs = {"local": load_scenario(SCENARIO, base).runs[0],
            "ray": load_scenario(SCENARIO, [*base, "compute.backend=ray",
                                            f"compute.ray_actors={args.actors}",
                                            "compute.ray_threads_per_actor=1"]).runs[0]}
    engine.get_dataset(cfgs["local"])  # decode the data once before timing
    rows: list[dict] = []
    for rep in range(args.repeats):
        results = {}
        for backend, cfg in cfgs.items():
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            res = results[backend] = engine.run(cfg)
            run_s = time.perf_counter() - t0
            r = res.rounds[res.rounds["round"] >= 1]
            rows.append({
                "repeat": rep, "backend": backend, "trainer": args.trainer,
                "actors": res.info.get("ray_actors", 0),
                "host_s_per_round": r["host_seconds"].mean(),
                "setup_s": res.info["setup_host_seconds"],
                "ray_connect_s": res.info.get("ray_connect_seconds", float("nan")),
                "ray_actors_start_s": res.info.get("ray_actors_start_seconds", float("nan")),
                "run_s": run_s, "load_1m": load,
                "identical_tables": _same(results["local"], res) if backend == "ray" else None,
                "final_accuracy": float(res.rounds["test_accuracy"].iloc[-1])})
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(rows).to_csv(args.out, index=False)
            print(pd.DataFrame(rows[-1:]).to_string(index=False, float_format="%.3f"), flush=True)
    df = pd.DataFrame(rows)
    med = df.groupby("backend")[["host_s_per_round", "run_s"]].median()
    print(df.to_string(index=False, float_format="%.3f"))
    print(f"median host s/round: local {med.loc['local', 'host_s_per_round']:.2f}, ray "
          f"{med.loc['ray', 'host_s_per_round']:.2f} -> speed-up "
          f"{med.loc['local', 'host_s_per_round'] / med.loc['ray', 'host_s_per_round']:.2f}x; "
          f"whole run {med.loc['local', 'run_s'] / med.loc['ray', 'run_s']:.2f}x; "
          f"tables identical in {int(df['identical_tables'].fillna(False).astype(bool).sum())} of "
          f"{args.repeats} repeats")


if __name__ == "__main__":
    main()
