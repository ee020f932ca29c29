"""Sweeps: expand a scenario's ``sweep:`` grid, run it on an executor, resume, combine tables."""

from fedsim.sweep.executors import LocalExecutor, Outcome, RayExecutor, make_executor
from fedsim.sweep.expand import Sweep, SweepRun, expand, load_sweep, run_id
from fedsim.sweep.runner import SweepReport, run_sweep

__all__ = ["LocalExecutor", "Outcome", "RayExecutor", "Sweep", "SweepReport", "SweepRun",
           "expand", "load_sweep", "make_executor", "run_id", "run_sweep"]
