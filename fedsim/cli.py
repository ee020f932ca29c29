"""The ``fedsim`` command line: run scenario files (and, via subcommands, sweeps and analysis)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fedsim.data import DataError
from fedsim.scenario import ScenarioError, load_scenario

log = logging.getLogger("fedsim")

EXIT_BAD_INPUT = 2


def _run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a scenario file and write its tables")
    p.add_argument("scenario", help="path to a scenario YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override any field, e.g. --set rounds=5 --set schemes.fedpaq.codec.levels=3")
    p.add_argument("--out", help="output folder (default: results/<scenario name>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    p.add_argument("--scheme", action="append", default=[],
                   help="run only this scheme (repeatable)")


def cmd_run(args: argparse.Namespace) -> int:
    from fedsim.engine import run
    from fedsim.results import format_summary, summary, write_results

    scenario = load_scenario(args.scenario, args.overrides)
    runs = scenario.runs
    if args.scheme:
        unknown = sorted(set(args.scheme) - {r.scheme for r in runs})
        if unknown:
            raise ScenarioError(f"--scheme: {', '.join(unknown)} not in {args.scenario} "
                                f"(schemes: {', '.join(r.scheme for r in runs)})")
        runs = [r for r in runs if r.scheme in args.scheme]
    out = Path(args.out or Path("results") / scenario.name)
    log.info("scenario %s: %d scheme(s) -> %s", scenario.name, len(runs), out)
    results = []
    for cfg in runs:
        results.append(run(cfg, progress=not args.quiet))
        if not args.quiet:
            print(format_summary(summary(results[-1:])).splitlines()[-1], file=sys.stderr)
    write_results(out, scenario.resolved, results)
    if not args.quiet:
        print(format_summary(summary(results)))
        print(f"tables written to {out}/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsim", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    return parser




def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for bad input, with one line on stderr)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    handlers = {"run": cmd_run}
    try:
        return handlers[args.command](args)
    except (ScenarioError, DataError) as exc:
        print(f"fedsim: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("fedsim: interrupted; no results written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
