"""FedPAQ's (r, tau, s) trade-off table from a ``fedsim run`` results folder.

``python -m analysis.fedpaq_tradeoff RESULTS_DIR [--target 0.97] [--out DIR]`` writes
``fedpaq_tradeoff.md`` and ``fedpaq_tradeoff.csv`` (default: into RESULTS_DIR) and prints the
Markdown table. Only result tables are read: ``rounds.parquet``, ``summary.csv`` and
``scenario.resolved.yaml`` (for each scheme's r, tau and s); nothing is simulated.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from analysis.tables import ResultsError, load_results, to_markdown

EXIT_BAD_INPUT = 2
#: Value of the ``s`` column for schemes that upload unquantized fp32 updates.
UNQUANTIZED = "fp32"
COLUMNS = ["r", "tau", "s", "scheme", "rounds", "rounds_to_target", "time_to_target_s",
           "bytes_up", "bytes_up_to_target", "final_accuracy"]


def tradeoff_table(results_dir: str | Path, target: float = 0.97) -> pd.DataFrame:
    """One row per scheme: its (r, tau, s), time and bytes to reach ``target``, final accuracy.

    Parameters
    ----------
    results_dir
        A folder written by ``fedsim run`` whose schemes all use ``training.local_steps``.
    target
        Test accuracy in (0, 1] to reach.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS`, sorted by r, tau, then s (``fp32`` last). ``r`` is nodes per
        period, ``tau`` local SGD steps, ``s`` QSGD levels (or ``fp32``); ``time_to_target_s``
        is the simulated time (seconds) at the end of the first evaluated round whose test
        accuracy is >= ``target`` (NaN if never); ``bytes_up`` counts all uploaded bytes of the
        run and ``bytes_up_to_target`` those up to and including that round (NaN if never);
        ``final_accuracy`` is the last evaluated test accuracy (fraction).

    Raises
    ------
    ResultsError
        The folder is not a results folder, or a scheme has no local_steps / known codec.
    """
    if not 0 < target <= 1:
        raise ResultsError(f"target must be in (0, 1], got {target}")
    res = load_results(results_dir)
    runs = _resolved_runs(res.path)
    rows = []
    for scheme, rd in res.rounds.groupby("scheme", sort=False):
        if scheme not in runs:
            raise ResultsError(f"{res.path}: scheme {scheme!r} missing from scenario.resolved.yaml")
        rd = rd.sort_values("round")
        done = rd[rd["round"] > 0]
        evaluated = rd.dropna(subset=["test_accuracy"])
        hit = evaluated[evaluated["test_accuracy"] >= target]
        reached = len(hit) > 0
        first = int(hit["round"].iloc[0]) if reached else None
        rows.append({
            **_parameters(scheme, runs[scheme], res.path),
            "scheme": scheme,
            "rounds": int(done["round"].max()) if len(done) else 0,
            "rounds_to_target": first if reached else np.nan,
            "time_to_target_s": float(hit["sim_time_end"].iloc[0]) if reached else np.nan,
            "bytes_up": int(rd["bytes_up"].sum()),
            "bytes_up_to_target": int(rd.loc[rd["round"] <= first, "bytes_up"].sum())
            if reached else np.nan,
            "final_accuracy": float(evaluated["test_accuracy"].iloc[-1]) if len(evaluated)
            else np.nan,
        })
    table = pd.DataFrame(rows, columns=COLUMNS)
    order = table["s"].map(lambda s: np.inf if s == UNQUANTIZED else float(s))
    return table.assign(_o=order).sort_values(["r", "tau", "_o"], kind="stable") \
        .drop(columns="_o").reset_index(drop=True)


def best_settings(table: pd.DataFrame) -> pd.DataFrame:
    """Per r, the row with the smallest time to target (rows that never reached it excluded)."""
    reached = table.dropna(subset=["time_to_target_s"])
    return reached.loc[reached.groupby("r")["time_to_target_s"].idxmin()].reset_index(drop=True)


def format_table(table: pd.DataFrame, target: float) -> pd.DataFrame:
    """Human-readable cells (seconds to 0.1 s, MB to 0.01, accuracy to 0.001; ``never``)."""
    never = "never"
    return pd.DataFrame({
        "r": table["r"], "tau": table["tau"], "s": table["s"], "rounds": table["rounds"],
        f"time_to_{target:g}_s": table["time_to_target_s"].map(
            lambda t: never if np.isnan(t) else f"{t:.1f}"),
        f"MB_up_to_{target:g}": table["bytes_up_to_target"].map(
            lambda b: never if np.isnan(b) else f"{b / 1e6:.2f}"),
        "MB_up_total": table["bytes_up"].map(lambda b: f"{b / 1e6:.2f}"),
        "final_accuracy": table["final_accuracy"].map(lambda a: f"{a:.3f}"),
    }).set_index("r")


def write_tradeoff(table: pd.DataFrame, out_dir: str | Path, target: float) -> dict[str, Path]:
    """Write ``fedpaq_tradeoff.csv`` (raw numbers) and ``.md`` (formatted); returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "fedpaq_tradeoff.csv", "md": out / "fedpaq_tradeoff.md"}
    table.to_csv(paths["csv"], index=False)
    best = "; ".join(f"r={b.r}: tau={b.tau}, s={b.s} ({b.time_to_target_s:.1f} s)"
                     for b in best_settings(table).itertuples()) or "no scheme reached it"
    paths["md"].write_text(to_markdown(format_table(table, target)) + "\n\nBest (tau, s) per r "
                           f"by simulated time to {target:g} test accuracy: {best}.\n")
    return paths


def _resolved_runs(path: Path) -> dict:
    f = path / "scenario.resolved.yaml"
    if not f.is_file():
        raise ResultsError(f"{path}: no scenario.resolved.yaml (needed for each scheme's r, tau, s)")
    runs = (yaml.safe_load(f.read_text()) or {}).get("runs")
    if not isinstance(runs, dict):
        raise ResultsError(f"{f}: no 'runs' mapping (not a fedsim run folder)")
    return runs


def _parameters(scheme: str, run: dict, path: Path) -> dict:
    """(r, tau, s) of one resolved run config."""
    tau = run["training"]["local_steps"]
    if tau is None:
        raise ResultsError(f"{path}: scheme {scheme!r} trains local epochs, not tau local steps")
    r = run["selection"]["clients_per_round"]
    if r is None:
        raise ResultsError(f"{path}: scheme {scheme!r} has no selection.clients_per_round (r)")
    codec = run["codec"]
    if codec["kind"] == "qsgd":
        s = str(codec["levels"])
    elif codec["kind"] == "identity":
        s = UNQUANTIZED
    else:
        raise ResultsError(f"{path}: scheme {scheme!r} uses codec {codec['kind']!r}, not qsgd/identity")
    return {"r": int(r), "tau": int(tau), "s": s}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns 0, or 2 with one line on stderr for bad input."""
    parser = argparse.ArgumentParser(prog="python -m analysis.fedpaq_tradeoff", description=__doc__)
    parser.add_argument("results", help="folder written by fedsim run")
    parser.add_argument("--target", type=float, default=0.97, help="test accuracy to reach")
    parser.add_argument("--out", help="where to write the table (default: RESULTS)")
    args = parser.parse_args(argv)
    try:
        table = tradeoff_table(args.results, args.target)
    except ResultsError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    paths = write_tradeoff(table, args.out or args.results, args.target)
    print(paths["md"].read_text(), end="")
    print(f"written: {paths['md']}, {paths['csv']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
