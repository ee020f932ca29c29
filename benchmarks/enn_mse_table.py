"""Reproduce the approximation-error table of Li & Han (2019) with fedsim's ENN.

For each of the paper's five settings (training scheme x decoder residual blocks) this trains
(or loads from the cache) an ENN on Gaussian data of variance ``--sample-var`` and prints its
test MSE on fresh samples next to the paper's value, the always-zero baseline ``v / N`` and the
best-linear-code bound ``(1 - m/n) v / N``. Sizes (n, ratio, widths, steps) are fedsim's choices;
the paper does not state them.

Usage: ``python benchmarks/enn_mse_table.py [--quick] [--ratio 4] [--no-cache]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedsim.enn import (
    EnnConfig,
    approximation_mse,
    linear_bound_mse,
    load_or_train,
    train_enn,
    zero_baseline_mse,
)

#: (scheme, residual blocks, MSE reported in the paper's table).
PAPER_ROWS = (
    ("freeze_decoder", 3, 0.0112),
    ("freeze_encoder", 3, 0.00232),
    ("end_to_end", 0, 0.00210),
    ("end_to_end", 3, 0.00166),
    ("end_to_end", 7, 0.00168),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small net, 400 steps (about 10 s per row)")
    p.add_argument("--n", type=int, default=64, help="chunk length (values)")
    p.add_argument("--ratio", type=int, default=4, help="compression ratio n/m")
    p.add_argument("--slots", type=int, default=9, help="N, clients per decoder input (paper: 9)")
    p.add_argument("--encoder-hidden", type=int, default=64, help="encoder hidden width")
    p.add_argument("--decoder-width", type=int, default=256, help="decoder width")
    p.add_argument("--steps", type=int, default=2000, help="Adam steps")
    p.add_argument("--batch", type=int, default=256, help="groups of N chunks per step")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--sample-var", type=float, default=0.1, help="variance of training values")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-groups", type=int, default=10_000, help="held-out groups for the MSE")
    p.add_argument("--no-cache", action="store_true", help="always train, never read/write cache")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.encoder_hidden, args.decoder_width = 32, 32, 128
        args.steps, args.batch, args.test_groups = 400, 128, 4_000
    return args


def main(argv: list[str] | None = None) -> None:
    torch.set_num_threads(1)
    args = parse_args(argv)
    base = {"n": args.n, "ratio": args.ratio, "slots": args.slots, "encoder_hidden": (args.encoder_hidden,),
                "decoder_width": args.decoder_width, "sample_var": args.sample_var,
                "samples": args.steps * args.batch, "steps": args.steps, "batch": args.batch, "lr": args.lr,
                "seed": args.seed}
    m = args.n // args.ratio
    zero = zero_baseline_mse(args.sample_var, args.slots)
    bound = linear_bound_mse(args.n, m, args.sample_var, args.slots)
    print(f"n={args.n} m={m} (ratio {args.ratio}) N={args.slots} var={args.sample_var} "
          f"steps={args.steps} batch={args.batch} (sizes: fedsim's choices)")
    print(f"{'scheme':<15} {'blocks':>6} {'measured':>9} {'paper':>8} {'zero':>8} "
          f"{'lin.bound':>9} {'meas/bound':>10} {'train s':>8}")
    for scheme, blocks, paper in PAPER_ROWS:
        cfg = EnnConfig(scheme=scheme, residual_blocks=blocks, **base)
        t0 = time.perf_counter()
        if args.no_cache:
            net, note = train_enn(cfg).net, ""
        else:
            result, cached = load_or_train(cfg)
            net, note = result.net, " (cached)" if cached else ""
        secs = time.perf_counter() - t0
        mse = approximation_mse(net, groups=args.test_groups)
        print(f"{scheme:<15} {blocks:>6} {mse:>9.5f} {paper:>8.5f} {zero:>8.5f} {bound:>9.5f} "
              f"{mse / bound:>10.3f} {secs:>8.1f}{note}")


if __name__ == "__main__":
    main()
