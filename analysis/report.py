"""``report.md`` for a results folder: the plots and tables, written next to the tables."""

from __future__ import annotations

from pathlib import Path

from analysis import plots
from analysis.tables import (
    Results,
    bandwidth_table,
    load_results,
    privacy_table,
    thesis_table,
    time_to_target_table,
    to_markdown,
    write_table,
)


def write_report(path: str | Path) -> Path:
    """Analyse the results folder ``path``: ``plots/*.png``, ``tables/*.{md,csv,tex}`` and
    ``report.md`` embedding them. Returns the report's path."""
    res = load_results(path)
    root = res.path
    figs = {
        "Accuracy vs simulated time": plots.accuracy_curves(res, "sim_time_s",
                                                            root / "plots" / "accuracy_vs_time.png"),
        "Accuracy vs cumulative traffic": plots.accuracy_curves(
            res, "cum_MB", root / "plots" / "accuracy_vs_bytes.png"),
        "Communication per round by message kind": plots.traffic_by_kind(
            res, root / "plots" / "traffic_by_kind.png"),
        "Time to target accuracy vs uplink": plots.time_to_target(
            res, root / "plots" / "time_to_target.png"),
        "Attack success": plots.attack_success(res, root / "plots" / "attack_success.png"),
    }
    tables = {
        "Bandwidth / accuracy": (bandwidth_table(res), "bandwidth_accuracy", (
                                 f"Cells: final test accuracy (mean ± sd over seeds) / simulated "
                                 f"time to {res.target:g} accuracy (mean; 'never' if a seed missed "
                                 f"it) / traffic in MB (up + down + keys) per run. Columns: "
                                 f"client uplink.")),
        "Final accuracy per model/dataset and scheme": (
            thesis_table(res), "accuracy_table", _reference_note(res)),
    }
    lines = [f"# {res.document.get('name', root.name)}", ""]
    if res.document.get("description"):
        lines += [res.document["description"], ""]
    lines += [_runs_line(res), ""]
    for title, (table, stem, note) in tables.items():
        write_table(table, root / "tables" / stem)
        lines += [f"## {title}", "", note, "", to_markdown(table), "",
                  f"(also [CSV](tables/{stem}.csv), [LaTeX](tables/{stem}.tex))", ""]
    privacy = privacy_table(res)
    if len(privacy):
        write_table(privacy, root / "tables" / "privacy_compare")
        png = plots.privacy_tradeoff(privacy, root / "plots" / "privacy_tradeoff.png")
        lines += ["## Privacy, accuracy and traffic", "",
                  ("Per scheme: final test accuracy, simulated seconds to the target accuracy, "
                  "bytes per client per round (all traffic over the client-rounds), the median "
                  "PSNR of the honest-but-curious server's reconstructions and the final DP "
                  "epsilon where one was accounted."), "", to_markdown(privacy), "",
                  f"![Privacy, accuracy and traffic]({png.relative_to(root).as_posix()})", ""]
    ttt = time_to_target_table(res)
    write_table(ttt.set_index("scheme"), root / "tables" / "time_to_target")
    for title, png in figs.items():
        if png is not None:
            lines += [f"## {title}", "", f"![{title}]({png.relative_to(root).as_posix()})", ""]
    if figs["Attack success"] is None:
        lines += ["(No attacks table in this folder: attack plot skipped.)", ""]
    report = root / "report.md"
    report.write_text("\n".join(lines))
    return report


def _runs_line(res: Results) -> str:
    s = res.summary
    failed = ""
    runs = res.path / "runs.csv"
    if runs.is_file():
        import pandas as pd

        status = pd.read_csv(runs)["status"].value_counts()
        failed = "".join(f", {n} {k}" for k, n in status.items() if k != "done")
    return (f"{len(s)} finished runs ({s['scheme'].nunique()} schemes, {s['seed'].nunique()} "
            f"seeds){failed}; total host (wall-clock) time of the runs {s['host_seconds'].sum():.0f} s.")


def _reference_note(res: Results) -> str:
    ref = res.document.get("reference") or {}
    source = ref.get("source")
    base = "Final test accuracy in %, mean over seeds."
    return f"{base} Reference columns: {source}." if source else base
