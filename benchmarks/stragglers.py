"""Host time when stragglers are skipped (``compute.stragglers: skip``) against training every
selected client (``train``), on an overcommitted cohort with a deadline; CSV out.

Usage: python benchmarks/stragglers.py [--rounds 5] [--threads 1] [--trainer batched|sequential]
       [--repeats 1]       [--out stragglers.csv]

Both runs must give the same tables (host columns aside); the script checks that and reports the
host seconds of the rounds (training and aggregation; evaluation excluded; the median over
``--repeats`` interleaved runs of each mode), the updates trained and the updates used. The claim to check: host seconds fall at least in proportion to the
updates not trained.
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch

from fedsim import engine
from fedsim.scenario import load_scenario

#: 60 clients, 30 selected per round (overcommit 1.5 over 20), the first 20 kept, slow links and
#: devices (log-normal, sigma 1) past a 0.75 s deadline dropped (about 30% of the selected arrive later); 5 local epochs, so that training,
#: not the simulation's bookkeeping, is what a round costs
SETTINGS = ["data.num_clients=60", "selection.clients_per_round=20", "selection.overcommit=1.5",
            "training.local_epochs=5",
            "selection.deadline_s=0.75", "compute.device=null",
            "compute.flops_per_s={dist: lognormal, median: 2.0e+10, sigma: 1.0}",
            "network.clients.uplink_bps={dist: lognormal, median: 5.0e+6, sigma: 1.0}"]


def _no_host(df: pd.DataFrame) -> pd.DataFrame:
    return df[sorted(c for c in df.columns if "host" not in c)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--trainer", choices=("batched", "sequential"), default="batched")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default="stragglers.csv")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results, host_s = {}, {"train": [], "skip": []}
    for _ in range(args.repeats):
        for mode in ("train", "skip"):
            cfg = load_scenario("scenarios/quickstart.yaml",
                                [*SETTINGS, f"rounds={args.rounds}", f"compute.stragglers={mode}",
                                 f"compute.trainer={args.trainer}"]).runs[0]
            res = results[mode] = engine.run(cfg)
            host_s[mode].append(float(res.rounds.loc[res.rounds["round"] > 0, "host_seconds"].sum()))
    rows = []
    for mode, res in results.items():
        played = res.rounds[res.rounds["round"] > 0]
        rows.append({"trainer": args.trainer, "stragglers": mode, "rounds": args.rounds,
                     "selected": int(played["n_selected"].sum()),
                     "used": int(played["n_completed"].sum()),
                     "late": int(played["n_late"].sum()), "surplus": int(played["n_surplus"].sum()),
                     "trained": res.info["updates_trained"],
                     "host_s": float(pd.Series(host_s[mode]).median()),
                     "host_s_min": min(host_s[mode]), "host_s_max": max(host_s[mode]),
                     "final_accuracy": float(played["test_accuracy"].iloc[-1])})
    for table in ("rounds", "clients", "messages"):
        pd.testing.assert_frame_equal(_no_host(getattr(results["train"], table)),
                                      _no_host(getattr(results["skip"], table)))
    out = pd.DataFrame(rows)
    train, skip = out.set_index("stragglers").loc["train"], out.set_index("stragglers").loc["skip"]
    out["host_s_ratio"] = out["host_s"] / train["host_s"]
    out["trained_ratio"] = out["trained"] / train["trained"]
    pairs = [s / t for s, t in zip(host_s["skip"], host_s["train"])]
    out["pair_ratios"] = " ".join(f"{r:.3f}" for r in pairs)  # skip / train, per repeat
    out.to_csv(args.out, index=False)
    print(out.to_string(index=False))
    print(f"tables identical; skip trains {skip['trained']}/{train['trained']} updates in "
          f"{skip['host_s']:.1f}/{train['host_s']:.1f} host s")


if __name__ == "__main__":
    main()
