"""KeyNet speed: encrypt + decrypt of LeNet-5 (avg pool, α = 1) on one core; budget 50 ms.

Usage: ``python benchmarks/keynet_speed.py [--repeats 50] [--alphas 1 2 4]``. Prints the key
setup time (one-off per key set) and the median / min time of one ``to_wire`` + ``from_wire``
round per α; exits 1 if the α = 1 median exceeds the budget.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

import torch

from fedsim.keynet.domain import KeyNetDomain
from fedsim.models import build_model

BUDGET_S = 0.050
INPUT = (1, 28, 28)


def time_round(domain: KeyNetDomain, state: dict, repeats: int) -> list[float]:
    """Wall times in seconds of ``repeats`` encrypt + decrypt rounds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        domain.from_wire(domain.to_wire(state))
        times.append(time.perf_counter() - t0)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--alphas", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("lenet5", pooling="avg").eval()
    state = model.state_dict()
    ok = True
    print(f"{'alpha':>5} {'wire values':>12} {'setup [s]':>10} {'median [ms]':>12} {'min [ms]':>9}")
    for alpha in args.alphas:
        t0 = time.perf_counter()
        domain = KeyNetDomain.from_seed(model, INPUT, seed=0, alpha=alpha)
        setup = time.perf_counter() - t0
        times = time_round(domain, state, args.repeats)
        med = statistics.median(times)
        print(f"{alpha:>5} {domain.numel:>12,} {setup:>10.2f} {1e3 * med:>12.2f} "
              f"{1e3 * min(times):>9.2f}")
        if alpha == 1:
            ok = med <= BUDGET_S
    print(f"alpha=1 budget {1e3 * BUDGET_S:.0f} ms: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
