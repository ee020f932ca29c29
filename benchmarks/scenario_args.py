"""The command line of the benchmarks that time a scenario's runs (imported by the scripts beside
it, which run as ``python benchmarks/NAME.py``): ``--scenario``, ``--set``, ``--repeats`` and
``--threads``."""

from __future__ import annotations

import argparse

import torch


def parse_scenario_args(description: str, threads: int) -> argparse.Namespace:
    """Parse ``sys.argv`` and set PyTorch's CPU threads (default ``threads``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--scenario", default="scenarios/quickstart.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY.PATH=VALUE", help="scenario override, as for fedsim run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=threads, help="PyTorch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args
