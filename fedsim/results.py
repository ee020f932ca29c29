"""Result tables of a scenario: concatenation, the per-scheme summary, and atomic writing."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from fedsim.engine import RunResult
from fedsim.outdir import publish

TABLES = ("rounds", "clients", "messages", "histogram", "attacks")


def concat(results: Sequence[RunResult], table: str) -> pd.DataFrame:
    """One long table over all runs."""
    frames = [getattr(r, table) for r in results]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def time_to_target(rounds: pd.DataFrame, target: float) -> float:
    """Simulated seconds until test accuracy first reaches ``target`` (NaN if never)."""
    hit = rounds[rounds["test_accuracy"] >= target]
    return float(hit["sim_time_end"].iloc[0]) if len(hit) else float("nan")


def summary(results: Sequence[RunResult]) -> pd.DataFrame:
    """One row per run: status, final accuracy, time to target, total bytes, host seconds.

    A run whose global model became non-finite has ``status`` "diverged", the round in
    ``diverged_round`` and a NaN final accuracy (its earlier rounds are kept in the tables).
    """
    rows = []
    for r in results:
        rd = r.rounds.sort_values("round")
        evaluated = rd.dropna(subset=["test_accuracy"])
        diverged = rd.loc[rd["diverged"], "round"] if "diverged" in rd else rd["round"].iloc[:0]
        rows.append({
            "scheme": r.config.scheme, "seed": r.config.seed, "rounds": int(rd["round"].max()),
            "status": "diverged" if len(diverged) else "ok",
            "diverged_round": int(diverged.iloc[0]) if len(diverged) else None,
            "final_accuracy": (float(evaluated["test_accuracy"].iloc[-1])
                               if len(evaluated) and not len(diverged) else np.nan),
            "target_accuracy": r.config.target_accuracy,
            "time_to_target_s": time_to_target(rd, r.config.target_accuracy),
            "sim_time_s": float(rd["sim_time_end"].max()),
            "bytes_up": int(rd["bytes_up"].sum()), "bytes_down": int(rd["bytes_down"].sum()),
            "bytes_keys": int(rd["bytes_keys"].sum()),
            "host_seconds": float(rd["host_seconds"].sum() + rd["eval_host_seconds"].fillna(0).sum()),
        })
    return pd.DataFrame(rows)


def format_summary(table: pd.DataFrame) -> str:
    """A fixed-width text rendering of :func:`summary` for the terminal."""
    shown = table.assign(
        final_accuracy=table["final_accuracy"].map("{:.4f}".format),
        time_to_target_s=table["time_to_target_s"].map(lambda t: "never" if np.isnan(t) else f"{t:.1f}"),
        sim_time_s=table["sim_time_s"].map("{:.1f}".format),
        MB_up=(table["bytes_up"] / 1e6).map("{:.3f}".format),
        MB_down=(table["bytes_down"] / 1e6).map("{:.3f}".format),
        MB_keys=(table["bytes_keys"] / 1e6).map("{:.3f}".format),
        host_seconds=table["host_seconds"].map("{:.1f}".format),
    )[["scheme", "seed", "rounds", "status", "final_accuracy", "time_to_target_s", "sim_time_s", "MB_up",
       "MB_down", "MB_keys", "host_seconds"]]
    target = table["target_accuracy"].iloc[0] if len(table) else float("nan")
    return shown.rename(columns={"time_to_target_s": f"time_to_{target:g}_s"}).to_string(index=False)


def write_results(out_dir: str | Path, resolved: dict, results: Sequence[RunResult]) -> Path:
    """Write every table (Parquet and CSV), the resolved scenario and the summary, atomically.

    The folder is built beside ``out_dir`` and swapped in only when complete (see
    :mod:`fedsim.outdir`), so an interrupted or failed run never leaves a half-written folder.
    """
    def fill(tmp: Path) -> None:
        for table in TABLES:
            frame = concat(results, table)
            frame.to_parquet(tmp / f"{table}.parquet", index=False)
            frame.to_csv(tmp / f"{table}.csv", index=False)
        for r in results:
            for name, data in r.files.items():
                (tmp / name).write_bytes(data)
        summ = summary(results)
        summ.to_csv(tmp / "summary.csv", index=False)
        (tmp / "summary.txt").write_text(format_summary(summ) + "\n")
        (tmp / "scenario.resolved.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        (tmp / "run_info.json").write_text(json.dumps(
            {r.config.scheme + f"/seed{r.config.seed}": r.info for r in results}, indent=2))
    return publish(Path(out_dir), fill, kind="run")
