"""Reading a results folder, and the comparison tables (Markdown, CSV and LaTeX).

Works on the output of ``fedsim run`` (one run per scheme) and of ``fedsim sweep`` (runs.csv,
run ids and one column per swept key). Only result tables are read; nothing is simulated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

#: Column that holds the client uplink speed in a sweep over it.
UPLINK = "network.clients.uplink_bps"


class ResultsError(ValueError):
    """The folder is not a readable fedsim results folder (message is one line)."""


@dataclass
class Results:
    """The tables of one results folder (empty frames for tables it lacks)."""

    path: Path
    rounds: pd.DataFrame
    messages: pd.DataFrame
    summary: pd.DataFrame
    attacks: pd.DataFrame
    document: dict = field(default_factory=dict)

    @property
    def target(self) -> float:
        """Target accuracy of the runs (the first run's)."""
        return float(self.summary["target_accuracy"].iloc[0])


def load_results(path: str | Path) -> Results:
    """Read a results folder; model, dataset and uplink columns are filled in when missing."""
    p = Path(path)
    if not (p / "rounds.parquet").is_file() or not (p / "summary.csv").is_file():
        raise ResultsError(f"{p}: not a fedsim results folder (no rounds.parquet / summary.csv)")
    read = lambda name: pd.read_parquet(p / f"{name}.parquet") if (p / f"{name}.parquet").is_file() \
        else pd.DataFrame()
    summary = pd.read_csv(p / "summary.csv")
    if not len(summary):
        raise ResultsError(f"{p}: no finished runs in summary.csv")
    resolved = yaml.safe_load((p / "scenario.resolved.yaml").read_text()) \
        if (p / "scenario.resolved.yaml").is_file() else {}
    document = resolved.get("document", {})
    rounds, messages = read("rounds"), read("messages")
    if "run_id" not in summary:  # a `fedsim run` folder: one run per (scheme, seed)
        runs = resolved.get("runs", {})
        for frame in (summary, rounds, messages):
            frame["run_id"] = frame["scheme"] + "/" + frame["seed"].astype(str)
        summary["model"] = summary["scheme"].map(lambda s: runs[s]["model"]["kind"])
        summary["dataset"] = summary["scheme"].map(lambda s: runs[s]["data"]["dataset"])
        summary[UPLINK] = summary["scheme"].map(
            lambda s: runs[s]["network"]["clients"]["uplink_bps"])
    return Results(p, rounds, messages, summary, read("attacks"), document)


def mbit(bps: float) -> str:
    """An uplink speed as a column label, e.g. ``0.1 Mbit/s``."""
    return f"{bps / 1e6:g} Mbit/s" if isinstance(bps, (int, float)) else str(bps)


def bandwidth_table(res: Results) -> pd.DataFrame:
    """Rows: schemes; columns: uplink levels; cells: mean final accuracy, time to target, MB.

    Means are over seeds; ``never`` marks a scheme that missed the target on some seed.
    """
    s = res.summary.copy()
    if UPLINK not in s:
        s[UPLINK] = "as configured"
    s["MB"] = (s["bytes_up"] + s["bytes_down"] + s["bytes_keys"]) / 1e6
    cells = {}
    for (scheme, bw), g in s.groupby(["scheme", UPLINK], sort=False):
        ttt = g["time_to_target_s"]
        time = "never" if ttt.isna().any() else f"{ttt.mean():.1f} s"
        acc = g["final_accuracy"]
        spread = f" ± {acc.std():.3f}" if len(g) > 1 else ""
        cells.setdefault(scheme, {})[bw] = (f"{acc.mean():.3f}{spread} / {time} / "
                                            f"{g['MB'].mean():.2f} MB")
    table = pd.DataFrame(cells).T
    table = table[sorted(table.columns, key=lambda c: (isinstance(c, str), c))]
    table.columns = [mbit(c) for c in table.columns]
    table.index.name = "scheme"
    return table


def thesis_table(res: Results) -> pd.DataFrame:
    """Final accuracy (%) per model/dataset (rows) and scheme (columns), mean over seeds.

    Where the scenario gives ``reference: {accuracy: {<model>/<dataset>: {<scheme>: value}}}``
    (values in %), each scheme gets a second column with the reference number beside fedsim's.
    """
    s = res.summary.assign(model_dataset=res.summary["model"] + "/" + res.summary["dataset"])
    ours = s.pivot_table(index="model_dataset", columns="scheme", values="final_accuracy",
                         aggfunc="mean", sort=False) * 100
    ref = (res.document.get("reference") or {}).get("accuracy") or {}
    cols = {}
    for scheme in ours.columns:
        cols[(scheme, "fedsim")] = ours[scheme].map(lambda v: "" if np.isnan(v) else f"{v:.1f}")
        if ref:
            cols[(scheme, "thesis")] = [_ref(ref, md, scheme) for md in ours.index]
    table = pd.DataFrame(cols, index=ours.index)
    table.columns = [f"{a} ({b})" for a, b in table.columns]
    table.index.name = "model/dataset"
    return table


def time_to_target_table(res: Results) -> pd.DataFrame:
    """Time to target (s, mean over the seeds that reached it) per scheme and uplink (Mbit/s)."""
    s = res.summary if UPLINK in res.summary else res.summary.assign(**{UPLINK: np.nan})
    table = s.groupby(["scheme", UPLINK], sort=False).agg(
        time_to_target_s=("time_to_target_s", "mean"),
        seeds_reached=("time_to_target_s", lambda t: int(t.notna().sum())),
        seeds=("seed", "nunique")).reset_index()
    table[UPLINK] = pd.to_numeric(table[UPLINK], errors="coerce") / 1e6
    table["time_to_target_s"] = table["time_to_target_s"].round(2)
    return table.rename(columns={UPLINK: "uplink_Mbit_s"})


def privacy_table(res: Results, adversary: str = "server") -> pd.DataFrame:
    """Per scheme (mean over seeds): final accuracy, simulated time to target (s), bytes per
    client per round (all traffic, set-up and keys included, over the client-rounds), median
    attack PSNR (dB) of ``adversary`` and the final DP epsilon where one was accounted.

    Empty without an attacks table holding ``adversary``.
    """
    a = res.attacks
    if not len(a) or "psnr_db" not in a or adversary not in set(a.get("adversary", [])):
        return pd.DataFrame()
    r = res.rounds
    traffic = r[[c for c in r.columns if c.startswith("bytes_")]].sum(axis=1)
    per_run = pd.DataFrame({"run_id": r["run_id"], "bytes": traffic, "clients": r["n_selected"]}) \
        .groupby("run_id").sum()
    s = res.summary.set_index("run_id")
    s["bytes_per_client_round"] = per_run["bytes"] / per_run["clients"].clip(lower=1)
    if "dp_epsilon" in r:
        s["dp_epsilon"] = r.sort_values("round").groupby("run_id")["dp_epsilon"].last()
    psnr = a[a["adversary"] == adversary].groupby("scheme")["psnr_db"].median()
    cols = {"final_accuracy": "mean", "time_to_target_s": "mean", "bytes_per_client_round": "mean"}
    if "dp_epsilon" in s:
        cols["dp_epsilon"] = "mean"
    table = s.groupby("scheme", sort=False).agg(cols)
    table[f"median_psnr_{adversary}_dB"] = psnr.reindex(table.index)
    return table.round({"final_accuracy": 4, "time_to_target_s": 2, "bytes_per_client_round": 0,
                        f"median_psnr_{adversary}_dB": 2, "dp_epsilon": 3})


def _ref(ref: dict, model_dataset: str, scheme: str) -> str:
    value = (ref.get(model_dataset) or {}).get(scheme)
    return "" if value is None else f"{float(value):.1f}"


def write_table(table: pd.DataFrame, stem: Path) -> dict[str, Path]:
    """Write ``table`` as ``stem``.md, .csv and .tex; returns the paths by format."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = {"md": stem.with_suffix(".md"), "csv": stem.with_suffix(".csv"),
             "tex": stem.with_suffix(".tex")}
    paths["md"].write_text(to_markdown(table) + "\n")
    table.to_csv(paths["csv"])
    paths["tex"].write_text(table.to_latex(escape=True))
    return paths


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub Markdown table (index as the first column), without extra dependencies."""
    frame = table.reset_index()
    head = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])
