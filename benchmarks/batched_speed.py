"""Batched against sequential local training: host seconds of whole runs, alternated.

Runs a scenario's first scheme with ``compute.trainer: sequential`` and ``batched`` in turn
(sequential, batched, sequential, ...) so both see the same machine load, and prints each run's
host seconds and final accuracy, the medians and the speed-up. Usage::

    python benchmarks/batched_speed.py [--scenario scenarios/quickstart.yaml] [--repeats 3]
                                       [--threads 2] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import statistics
import time

from scenario_args import parse_scenario_args

from fedsim import engine
from fedsim.scenario import load_scenario


def main() -> None:
    args = parse_scenario_args(__doc__.splitlines()[0], threads=2)
    cfgs = {t: load_scenario(args.scenario, [*args.overrides, f"compute.trainer={t}"]).runs[0]
            for t in ("sequential", "batched")}
    engine.get_dataset(cfgs["batched"])  # decode the data once before timing
    seconds: dict[str, list[float]] = {t: [] for t in cfgs}
    accuracy: dict[str, list[float]] = {t: [] for t in cfgs}
    for rep in range(args.repeats):
        for trainer, cfg in cfgs.items():
            t0 = time.perf_counter()
            rounds = engine.run(cfg).rounds
            seconds[trainer].append(time.perf_counter() - t0)
            accuracy[trainer].append(float(rounds["test_accuracy"].dropna().iloc[-1]))
            print(f"run {rep + 1} {trainer:10s}: {seconds[trainer][-1]:7.2f} s host, "
                  f"final accuracy {accuracy[trainer][-1]:.4f}", flush=True)
    med = {t: statistics.median(s) for t, s in seconds.items()}
    for t in cfgs:
        print(f"median {t:10s}: {med[t]:7.2f} s host, accuracy {statistics.median(accuracy[t]):.4f}")
    print(f"speed-up batched vs sequential: {med['sequential'] / med['batched']:.2f}x "
          f"({args.threads} threads)")


if __name__ == "__main__":
    main()
