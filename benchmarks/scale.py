"""Scale: set-up seconds, host seconds per round and peak RSS against registered clients.

Runs ``scenarios/scale_100k.yaml`` (synthetic(1, 1), 100 clients per round, MLP) with
``data.num_clients`` set to each requested count, each in a fresh process so its peak RSS is its
own. Usage::

    OMP_NUM_THREADS=1 python benchmarks/scale.py [--clients 100 1000 10000 100000] [--rounds 5]
        [--out results/scale.csv] [--set KEY=VALUE ...]

CSV columns: ``registered_clients``; ``import_s`` (importing torch and the engine);
``setup_s`` (``run()`` start until the first event: data generation, partition, model, the
world; ``run_info`` ``setup_host_seconds``); ``host_s_per_round`` (mean of the rounds table's
``host_seconds`` over rounds 1..R: selection, training, encoding, aggregation);
``run_s`` (the whole ``run()``, tables included); ``peak_rss_mb`` (the process's maximum resident
set, ``ru_maxrss``); ``baseline_rss_mb`` (after imports); ``clients_built``; ``final_accuracy``.
The CSV is rewritten after each count. Local against Ray backend speed: ``benchmarks/ray_speed.py``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "scale_100k.yaml"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(n: int, rounds: int, sets: list[str]) -> dict:
    """One measured run in this process."""
    t_start = time.perf_counter()
    import torch

    from fedsim.engine import run
    from fedsim.scenario import load_scenario

    torch.set_num_threads(1)
    import_s, baseline = time.perf_counter() - t_start, _rss_mb()
    cfg = load_scenario(SCENARIO, [f"data.num_clients={n}", f"rounds={rounds}",
                                   f"eval_every={rounds}", *sets]).runs[0]
    h0 = time.perf_counter()
    res = run(cfg)
    run_s = time.perf_counter() - h0
    r = res.rounds[res.rounds["round"] >= 1]
    return {"registered_clients": n, "import_s": import_s,
            "setup_s": res.info["setup_host_seconds"], "host_s_per_round": r["host_seconds"].mean(),
            "run_s": run_s, "peak_rss_mb": _rss_mb(), "baseline_rss_mb": baseline,
            "clients_built": res.info["clients_built"],
            "final_accuracy": float(res.rounds["test_accuracy"].iloc[-1])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, nargs="+", default=[100, 1000, 10_000, 100_000])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default="results/scale.csv")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.rounds, args.sets)))
        return
    rows = []
    for n in args.clients:
        cmd = [sys.executable, __file__, "--child", str(n), "--rounds", str(args.rounds)]
        cmd += [a for s in args.sets for a in ("--set", s)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(args.out, index=False)
        print(pd.DataFrame(rows).to_string(index=False, float_format="%.3f"), flush=True)


if __name__ == "__main__":
    main()
