"""``fedsim analyze RESULTS_DIR`` (also ``python -m analysis RESULTS_DIR``): plots, tables, report."""

from __future__ import annotations

import argparse
import sys

EXIT_BAD_INPUT = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``analyze`` subcommand."""
    p = subparsers.add_parser("analyze", help="plots, tables and report.md for a results folder",
                              description=__doc__)
    p.add_argument("results", help="folder written by fedsim run or fedsim sweep")
    p.set_defaults(func=cmd_analyze)


def cmd_analyze(args: argparse.Namespace) -> int:
    """Write the report; exit 2 with one line if the folder is not a results folder."""
    from analysis.report import write_report
    from analysis.tables import ResultsError

    try:
        report = write_report(args.results)
    except ResultsError as exc:
        print(f"fedsim analyze: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"report written to {report}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m analysis RESULTS_DIR``."""
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    register(sub)
    return cmd_analyze(parser.parse_args(["analyze", *(argv if argv is not None else sys.argv[1:])]))
