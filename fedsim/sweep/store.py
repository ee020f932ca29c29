"""On-disk layout of a sweep: one folder per run, written atomically, and the combined tables.

::

    <out>/runs/<run_id>/            one finished run: rounds/clients/messages/histogram.parquet,
        run.json                    its config, swept values and engine info,
        DONE                        completion marker (the folder appears only with it inside)
    <out>/runs/<run_id>/error.txt   a failed run: the error and traceback (no DONE)
    <out>/runs.csv                  one row per run: id, scheme, seed, swept keys, status, error
    <out>/failures.csv              the failed runs only
    <out>/<table>.parquet|csv       every finished run's rows, with run_id and the swept keys
    <out>/fedsim-output.json        marks the folder as a fedsim sweep (others are never written)

A run counts as done only when its folder holds ``DONE``. Each folder is assembled in a
temporary sibling and swapped into place (:func:`fedsim.outdir.publish`), so a sweep killed at
any moment leaves either a complete run or none; re-running it skips exactly the done runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from fedsim.cachefile import write_file_atomic
from fedsim.engine import RunResult
from fedsim.outdir import publish
from fedsim.results import TABLES, format_summary, summary
from fedsim.sweep.expand import Sweep, SweepRun

MARKER = "DONE"
ERROR_FILE = "error.txt"


def run_dir(out: Path, rid: str) -> Path:
    """Folder of run ``rid`` under the sweep folder ``out``."""
    return out / "runs" / rid


def is_done(out: Path, rid: str) -> bool:
    """Whether run ``rid`` finished and was written completely."""
    return (run_dir(out, rid) / MARKER).is_file()


def write_run(out: Path, run: SweepRun, tables: dict[str, pd.DataFrame], info: dict,
              files: dict[str, bytes] | None = None) -> None:
    """Write one finished run's tables and extra files atomically, completion marker included."""
    _publish(out, run, lambda tmp: _fill_done(tmp, run, tables, info, files or {}))


def write_failure(out: Path, run: SweepRun, error: str) -> None:
    """Record a failed run: its config and ``error.txt`` (replacing any earlier attempt)."""
    def fill(tmp: Path) -> None:
        (tmp / "run.json").write_text(_run_json(run, {}))
        (tmp / ERROR_FILE).write_text(error)
    _publish(out, run, fill)


def read_run(out: Path, run: SweepRun) -> RunResult:
    """Load a finished run back as a :class:`~fedsim.engine.RunResult`."""
    d = run_dir(out, run.run_id)
    frames = {t: pd.read_parquet(d / f"{t}.parquet") for t in TABLES}
    info = json.loads((d / "run.json").read_text())["info"]
    return RunResult(run.config, info=info, **frames)


def read_error(out: Path, rid: str) -> str | None:
    """The recorded error of run ``rid``, or None if it has none."""
    p = run_dir(out, rid) / ERROR_FILE
    return p.read_text() if p.is_file() else None


def write_combined(out: Path, sweep: Sweep) -> tuple[int, int]:
    """Concatenate every finished run into ``<out>/<table>.*``, with the run lists.

    Returns
    -------
    (done, failed) : tuple of int
        Numbers of finished and failed runs (the rest are missing).
    """
    results, rows = [], []
    for run in sweep.runs:
        row = {"run_id": run.run_id, "scheme": run.config.scheme, "seed": run.config.seed,
               "model": run.config.model.kind, "dataset": run.config.data.dataset,
               **_swept_columns(sweep, run)}
        if is_done(out, run.run_id):
            results.append((run, read_run(out, run)))
            rows.append({**row, "status": "done", "error": ""})
        else:
            err = read_error(out, run.run_id)
            last = err.strip().splitlines()[-1] if err else ""
            rows.append({**row, "status": "failed" if err else "missing", "error": last})
    runs = pd.DataFrame(rows)
    files: dict[str, pd.DataFrame] = {"runs": runs, "failures": runs[runs["status"] == "failed"]}
    for table in TABLES:
        frames = [_label(getattr(res, table), sweep, run) for run, res in results]
        files[table] = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    summ = summary([res for _, res in results])
    if len(summ):
        summ = pd.concat([runs[runs["status"] == "done"].drop(columns=["status", "error"])
                          .reset_index(drop=True), summ.drop(columns=["scheme", "seed"])], axis=1)
    files["summary"] = summ
    for name, frame in files.items():
        write_file_atomic(out / f"{name}.csv", lambda p, f=frame: f.to_csv(p, index=False))
        if name in TABLES or name == "summary":
            write_file_atomic(out / f"{name}.parquet", lambda p, f=frame: f.to_parquet(p, index=False))
    if len(summ):
        write_file_atomic(out / "summary.txt", lambda p: p.write_text(_summary_text(summ, sweep) + "\n"))
    resolved = {"name": sweep.name, "source": sweep.source, "sweep_keys": sweep.keys,
                "document": sweep.document}
    write_file_atomic(out / "scenario.resolved.yaml",
            lambda p: p.write_text(yaml.safe_dump(resolved, sort_keys=False)))
    return len(results), int((runs["status"] == "failed").sum())


def _summary_text(summ: pd.DataFrame, sweep: Sweep) -> str:
    """:func:`~fedsim.results.format_summary` with the swept keys and run ids in front."""
    lines = format_summary(summ).splitlines()
    front = summ[["run_id"] + [k for k in sweep.keys if k != "seed"]].astype(str)
    front_lines = front.to_string(index=False).splitlines()
    return "\n".join(f"{a}  {b}" for a, b in zip(front_lines, lines))


def _swept_columns(sweep: Sweep, run: SweepRun) -> dict[str, Any]:
    """Swept values as table cells (lists and mappings as JSON text; ``seed`` is already a column)."""
    cells = {k: run.swept.get(k) for k in sweep.keys if k != "seed"}
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in cells.items()}


def _label(frame: pd.DataFrame, sweep: Sweep, run: SweepRun) -> pd.DataFrame:
    return frame.assign(run_id=run.run_id, **_swept_columns(sweep, run))


def _fill_done(tmp: Path, run: SweepRun, tables: dict[str, pd.DataFrame], info: dict,
               files: dict[str, bytes]) -> None:
    for table in TABLES:
        tables[table].to_parquet(tmp / f"{table}.parquet", index=False)
    for name, data in files.items():
        (tmp / Path(name).name).write_bytes(data)
    (tmp / "run.json").write_text(_run_json(run, info))
    (tmp / MARKER).write_text("")


def _run_json(run: SweepRun, info: dict) -> str:
    return json.dumps({"run_id": run.run_id, "swept": run.swept, "info": info,
                       "config": run.config.model_dump(mode="json")}, indent=2, default=str)


def _publish(out: Path, run: SweepRun, fill: Callable[[Path], None]) -> None:
    publish(run_dir(out, run.run_id), fill, kind="sweep-run")  # replaces an earlier failed attempt
