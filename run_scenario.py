#!/usr/bin/env python3
"""Run a fedsim scenario file: ``python run_scenario.py scenarios/quickstart.yaml [--set k=v] [--out DIR]``.

Same as ``fedsim run``.
"""

import sys

from fedsim.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
