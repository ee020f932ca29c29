"""The ``fedsim`` command line: run scenario files (and, via subcommands, sweeps and analysis)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import re
import sys
from pathlib import Path

import torch

from fedsim.checkpoint import Checkpointer, check_resumable
from fedsim.data import DataError
from fedsim.outdir import OutputError, check_output
from fedsim.placement import DEVICE_PATTERN, DeviceUnavailableError
from fedsim.ray_backend import RayBackendError
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
    p.add_argument("--device", metavar="DEVICE", type=_torch_device,
                   help="torch device for training: auto, cpu, cuda, cuda:N or guard "
                        "(sets compute.torch_device; simulated times and bytes do not change)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="train on the Ray cluster at ADDR, e.g. 10.0.0.1:6379 (sets "
                        "compute.backend=ray; without it, compute.backend: ray starts a local "
                        "Ray instance for the command)")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                   help="save the run's state every N rounds (beside the output folder)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoints of an interrupted run (same scenario)")
    p.set_defaults(func=cmd_run)


def _torch_device(value: str) -> str:
    if not re.match(DEVICE_PATTERN, value):
        raise argparse.ArgumentTypeError(f"{value!r} is not auto, cpu, cuda, cuda:N or guard")
    return value


def cmd_run(args: argparse.Namespace) -> int:
    from fedsim.engine import RunResult, run
    from fedsim.results import format_summary, summary, write_results

    overrides = args.overrides + ([f"compute.torch_device={args.device}"] if args.device else [])
    overrides += ["compute.backend=ray"] if args.ray_address else []
    scenario = load_scenario(args.scenario, overrides)
    runs = scenario.runs
    if args.scheme:
        unknown = sorted(set(args.scheme) - {r.scheme for r in runs})
        if unknown:
            raise ScenarioError(f"--scheme: {', '.join(unknown)} not in {args.scenario} "
                                f"(schemes: {', '.join(r.scheme for r in runs)})")
        runs = [r for r in runs if r.scheme in args.scheme]
    out = Path(args.out or Path("results") / scenario.name)
    check_output(out, "run", inputs=[Path(args.scenario)])
    ckpt = _checkpointer(args, runs, out)
    log.info("scenario %s: %d scheme(s) -> %s", scenario.name, len(runs), out)
    results = []
    with _ray_session(runs, args.ray_address):  # one Ray connection for all schemes
        for cfg in runs:
            done = ckpt.load_done(cfg) if ckpt is not None else None
            if done is not None:  # finished before the interruption
                results.append(RunResult(cfg, **done))
                continue
            try:
                results.append(run(cfg, progress=not args.quiet, checkpoint=ckpt))
            except DataError as exc:  # name the scenario file and section, as for config errors
                raise DataError(f"{args.scenario}: data: {exc}") from None
            if ckpt is not None:
                ckpt.save_done(results[-1])
            if not args.quiet:
                row = summary(results[-1:]).iloc[0]
                outcome = (f"diverged in round {row.diverged_round}" if row.status == "diverged"
                           else f"final accuracy {row.final_accuracy:.4f}")
                print(f"{row.scheme} (seed {row.seed}): {outcome} after {row.rounds} rounds, "
                      f"{row.sim_time_s:.1f} s simulated, {row.host_seconds:.1f} s host",
                      file=sys.stderr)
    write_results(out, scenario.resolved, results)
    if ckpt is not None:
        ckpt.clear()
    if not args.quiet:
        print(format_summary(summary(results)))
        print(f"tables written to {out}/")
    return 0


def _ray_session(runs: list, address: str | None) -> contextlib.AbstractContextManager:
    """Ray, connected (or a local instance started) for the runs that train on it."""
    if not any(cfg.compute.backend == "ray" for cfg in runs):
        return contextlib.nullcontext()
    from fedsim.ray_backend import ray_session

    return ray_session(address)


def _checkpointer(args: argparse.Namespace, runs: list, out: Path) -> Checkpointer | None:
    """The checkpoints of this output folder (``.<out>.fedsim-checkpoint/``), if asked for."""
    if args.checkpoint_every < 0:
        raise ScenarioError(f"--checkpoint-every must be >= 0, got {args.checkpoint_every}")
    if not (args.checkpoint_every or args.resume):
        return None
    for cfg in runs:
        try:
            check_resumable(cfg)
        except ValueError as exc:
            raise ScenarioError(f"--checkpoint-every/--resume: {exc}") from None
    folder = out.parent / f".{out.name}.fedsim-checkpoint"
    if args.resume and not folder.is_dir():
        raise ScenarioError(f"--resume: no checkpoints at {folder} (the run never wrote one, "
                            "or it finished)")
    ckpt = Checkpointer(folder, args.checkpoint_every)
    if not args.resume:
        ckpt.clear()  # never resume stale state by accident
    return ckpt


#: Modules that add a subcommand: each defines ``register(subparsers)``, which adds a parser
#: whose ``func`` default takes the parsed arguments and returns an exit status.
SUBCOMMAND_MODULES = ("fedsim.sweep.cli", "analysis.cli", "fedsim.enn.cli", "fedsim.attacks.cli")


class _OneLineErrors(argparse.ArgumentParser):
    """Argument errors as one line (no usage dump) and exit status 2."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(prog="fedsim", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("FEDSIM_THREADS", "1")),
                        help="PyTorch CPU threads (default 1, or $FEDSIM_THREADS)")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # that part of fedsim is not installed in this checkout
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for bad input, with one line on stderr)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.threads < 1:
        print("fedsim: error: --threads must be >= 1", file=sys.stderr)
        return EXIT_BAD_INPUT
    torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except (ScenarioError, DataError, DeviceUnavailableError, OutputError, RayBackendError) as exc:
        print(f"fedsim: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("fedsim: interrupted; no results written", file=sys.stderr)
        return 130
    except Exception as exc:  # a defect or an environment failure: one line, traceback with -v
        if args.verbose:
            raise
        print(f"fedsim: error: {type(exc).__name__}: {_one_line(exc)} (run with -v for the "
              "traceback)", file=sys.stderr)
        return EXIT_BAD_INPUT


def _one_line(exc: BaseException) -> str:
    """The first line of an exception's message, shortened to 300 characters."""
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else "(no message)"


if __name__ == "__main__":
    sys.exit(main())
