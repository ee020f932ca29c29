"""compute.backend: ray: one simulation's training on Ray actors gives the local backend's tables.

One local Ray instance (2 CPUs) serves the module; the tests skip when Ray cannot start.
"""

import time

import pandas as pd
import pytest
import torch

from fedsim.engine import run
from fedsim.ray_backend import Unit, split_units
from fedsim.scenario import load_scenario
from fedsim.trainers import ClientJob, LocalWork

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_instance():
    if ray.is_initialized():
        ray.shutdown()
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # noqa: BLE001 -- any failure to start Ray skips, it does not fail
        pytest.skip(f"cannot start a local Ray instance: {exc}")
    yield
    ray.shutdown()


def _host_free(result):
    """The rounds, clients and messages tables without host-time columns."""
    host = [c for c in result.clients.columns if c.startswith("host_")]
    return (result.rounds.drop(columns=["host_seconds", "eval_host_seconds"]),
            result.clients.drop(columns=host), result.messages)


def _pair(overrides):
    """The tiny scenario on the local backend and on 2 Ray actors of one thread."""
    cfg = load_scenario("scenarios/tiny.yaml", overrides).runs[0]
    ray_cfg = load_scenario("scenarios/tiny.yaml", [*overrides, "compute.backend=ray",
                                                    "compute.ray_actors=2"]).runs[0]
    return run(cfg), run(ray_cfg)


# max_batch_clients=2: the 4-client cohort is two chunks, one per actor (dropout streams per chunk)
@pytest.mark.parametrize("overrides", [
    ["compute.trainer=batched", "compute.max_batch_clients=2"],
    ["compute.trainer=sequential", "data.num_clients=6", "selection.fraction=0.5", "rounds=3"],
], ids=["batched", "sequential"])
def test_ray_backend_gives_the_local_tables(ray_instance, overrides):
    local, remote = _pair(overrides)
    assert remote.info["trainer"] == "RayTrainer" and remote.info["ray_actors"] == 2
    assert remote.clients["train_loss"].notna().all()
    for a, b in zip(_host_free(local), _host_free(remote), strict=True):
        pd.testing.assert_frame_equal(a, b)
    assert ray.is_initialized() and _cpus_freed()  # the run's actors are gone


def _cpus_freed(wait_s: float = 30.0) -> bool:
    """Whether both CPUs of the instance are free again (actors hold one each) within wait_s."""
    deadline = time.monotonic() + wait_s
    while ray.available_resources().get("CPU", 0) < 2:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_split_units_balances_samples_in_slot_order():
    work = LocalWork(1, None, 10, 0.1, 0.0, 0.0)
    jobs = {c: ClientJob(torch.arange(n), work) for c, n in enumerate([50, 10, 10, 10, 30])}
    units = [Unit((0,), None), Unit((1, 2), 0), Unit((3,), None), Unit((4,), None)]
    shares = split_units(units, jobs, 2)
    assert shares == [[units[0]], [units[1], units[2], units[3]]]
    assert split_units(units, jobs, 5)[4] == []
