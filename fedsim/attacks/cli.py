"""``fedsim attack-report OUT``: the scheme x adversary table of a run's ``attacks`` table."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from fedsim.scenario import ScenarioError

CELL = ["scheme", "adversary", "isolation"]


def attack_summary(attacks: pd.DataFrame, threshold_db: float = 20.0) -> pd.DataFrame:
    """One row per scheme x adversary (x ENN isolation) over the attacked targets.

    PSNR in dB (per target: batch mean), SSIM, success rate = fraction of targets with PSNR
    >= ``threshold_db``, label accuracy, zero/mean-image baselines, forward-model cosine at the
    true input (``obs_cosine``: 1 = the adversary's view is exact; ENN: decoding cosine).
    """
    done = attacks[attacks["status"] == "attacked"]
    rows = []
    for key, g in done.groupby(CELL, sort=False):
        p = g["psnr_db"].clip(upper=100.0)  # identical images give +inf
        row = dict(zip(CELL, key))
        row.update(
            n=len(g), psnr_mean=p.mean(), psnr_std=p.std(ddof=1), psnr_median=p.median(),
            ssim_mean=g["ssim"].mean(), ssim_std=g["ssim"].std(ddof=1),
            ssim_median=g["ssim"].median(), success=float((g["psnr_db"] >= threshold_db).mean()),
            label_acc=g["label_accuracy"].mean(), zero_psnr=g["zero_image_psnr_db"].mean(),
            mean_psnr=g["mean_image_psnr_db"].mean(), obs_cos_median=g["obs_cosine"].median())
        if "psnr_encrypted_db" in g and g["psnr_encrypted_db"].notna().any():
            row["psnr_vs_encrypted_median"] = g["psnr_encrypted_db"].clip(upper=100.0).median()
        rows.append(row)
    skipped = attacks[attacks["status"] != "attacked"]
    for key, g in skipped.groupby(CELL + ["status"], sort=False):
        rows.append({**dict(zip(CELL, key[:3])), "n": 0, "note": key[3]})
    return pd.DataFrame(rows)


def format_attack_summary(table: pd.DataFrame) -> str:
    """Fixed-width text of :func:`attack_summary` (mean ± std, median)."""
    def pm(m, s):
        return "" if pd.isna(m) else f"{m:5.1f} ± {0 if pd.isna(s) else s:4.1f}"

    shown = pd.DataFrame({
        "scheme": table["scheme"], "adversary": table["adversary"],
        "iso": table["isolation"], "n": table["n"],
        "PSNR dB": [pm(m, s) for m, s in zip(table.get("psnr_mean", np.nan),
                                             table.get("psnr_std", np.nan))],
        "med": table.get("psnr_median", np.nan).map(lambda v: "" if pd.isna(v) else f"{v:.1f}"),
        "SSIM": [("" if pd.isna(m) else f"{m:.2f} ± {s:.2f}") for m, s in
                 zip(table.get("ssim_mean", np.nan), table.get("ssim_std", np.nan).fillna(0))],
        "SSIM med": table.get("ssim_median", np.nan).map(lambda v: "" if pd.isna(v) else f"{v:.2f}"),
        "succ@20": table.get("success", np.nan).map(lambda v: "" if pd.isna(v) else f"{v:.0%}"),
        "label": table.get("label_acc", np.nan).map(lambda v: "" if pd.isna(v) else f"{v:.0%}"),
        "zero dB": table.get("zero_psnr", np.nan).map(lambda v: "" if pd.isna(v) else f"{v:.1f}"),
        "mean dB": table.get("mean_psnr", np.nan).map(lambda v: "" if pd.isna(v) else f"{v:.1f}"),
        "obs cos": table.get("obs_cos_median", np.nan).map(
            lambda v: "" if pd.isna(v) else f"{v:.4f}"),
    })
    if "psnr_vs_encrypted_median" in table:
        shown["vs x̂ med"] = table["psnr_vs_encrypted_median"].map(
            lambda v: "" if pd.isna(v) else f"{v:.1f}")
    if "note" in table:
        shown["note"] = table["note"].fillna("")
    return shown.to_string(index=False)


def cmd_attack_report(args: argparse.Namespace) -> int:
    path = Path(args.out) / "attacks.parquet"
    if not path.is_file():
        raise ScenarioError(f"{path}: no attacks table (run a scenario with an attack: block)")
    attacks = pd.read_parquet(path)
    if attacks.empty:
        raise ScenarioError(f"{path}: the attacks table is empty (no attack: block, or no targets)")
    table = attack_summary(attacks, args.threshold)
    print(format_attack_summary(table))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``attack-report`` to the ``fedsim`` command line."""
    p = sub.add_parser("attack-report", help="scheme x adversary table of a run's attacks")
    p.add_argument("out", help="output folder of `fedsim run` (holds attacks.parquet)")
    p.add_argument("--threshold", type=float, default=20.0, help="success PSNR in dB (default 20)")
    p.add_argument("--csv", help="also write the table to this CSV file")
    p.set_defaults(func=cmd_attack_report)
