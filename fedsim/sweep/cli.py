"""``fedsim sweep SCENARIO``: expand a scenario's ``sweep:`` block and run it, resumably."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

#: Exit status when some runs failed (the message on stderr says how many).
EXIT_RUNS_FAILED = 1
EXIT_INTERRUPTED = 130


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sweep`` subcommand."""
    p = subparsers.add_parser("sweep", help="run a scenario's sweep: grid (and zip) x schemes",
                              description=__doc__)
    p.add_argument("scenario", help="path to a scenario YAML file (with a sweep: block)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override any field before expanding, e.g. --set rounds=3")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: this machine (default); ray: a Ray cluster or a local Ray instance")
    p.add_argument("--workers", type=int, default=1,
                   help="parallel runs: local process-pool size (1 = sequential, the default), "
                        "or CPUs of a local Ray instance")
    p.add_argument("--ray-address", default=None,
                   help="address of an existing Ray cluster (default: start a local instance)")
    p.add_argument("--out", help="output folder (default: results/<scenario name>); re-running "
                                 "with the same folder runs only the missing runs")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run the sweep; exit 0 if every run succeeded, 1 if some failed, 2 for bad input."""
    from fedsim.outdir import check_output, claim
    from fedsim.scenario import ScenarioError
    from fedsim.sweep.executors import make_executor
    from fedsim.sweep.expand import load_sweep
    from fedsim.sweep.runner import run_sweep

    if args.workers < 1:
        raise ScenarioError(f"--workers must be >= 1, got {args.workers}")
    if args.ray_address and args.executor != "ray":
        raise ScenarioError("--ray-address needs --executor ray")
    sweep = load_sweep(args.scenario, args.overrides)
    out = Path(args.out or Path("results") / sweep.name)
    check_output(out, "sweep", inputs=[Path(args.scenario)])
    executor = make_executor(args.executor, args.workers, args.ray_address, args.threads)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    claim(out, "sweep")
    try:
        report = run_sweep(sweep, out, executor, progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"fedsim sweep: interrupted; finished runs are kept in {out}/runs/, run the same "
              "command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not args.quiet:
        print(f"{report.total} runs: {report.skipped} already done, {report.executed} run now "
              f"in {report.host_seconds:.0f} s, {report.failed} failed; tables in {out}/")
    if report.failed:
        print(f"fedsim sweep: {report.failed} of {report.total} runs failed "
              f"(errors in {out}/failures.csv and {out}/runs/<id>/error.txt)", file=sys.stderr)
        return EXIT_RUNS_FAILED
    return 0


def _interrupt(signum, frame) -> None:
    """SIGTERM handler: unwind like Ctrl-C so finished runs are combined before exiting."""
    raise KeyboardInterrupt
