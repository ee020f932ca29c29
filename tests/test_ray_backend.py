"""compute.backend: ray: one simulation's training on Ray actors gives the local backend's tables.

One local Ray instance (2 CPUs) serves the module; the tests skip when Ray cannot start.
"""

import copy
import time

import pandas as pd
import pytest
import torch

from fedsim.engine import run
from fedsim.ray_backend import Unit, split_units
from fedsim.scenario import load_scenario
from fedsim.trainers import ClientJob, LocalWork

ray = pytest.importorskip("ray")


def test_an_unreachable_ray_address_is_one_line_and_exit_2(tmp_path, capsys):
    """Runs before the module's Ray instance starts (a connected process ignores the address)."""
    from fedsim.cli import main

    assert not ray.is_initialized()
    assert main(["run", "scenarios/tiny.yaml", "--ray-address", "127.0.0.1:1", "--quiet",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "127.0.0.1:1" in err and not (tmp_path / "out").exists()


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


def test_an_actor_trains_a_chunk_under_its_local_chunk_number(ray_instance):
    """Dropout masks are drawn per (round, chunk): an actor given chunk 1 of the local chunking
    draws chunk 1's masks, so its clients' weights equal the local batched trainer's (the actor
    class is used in this process)."""
    from fedsim.placement import resolve_placement
    from fedsim.ray_backend import ActorSpec, SharedTensor, TrainingActor
    from fedsim.trainers import BatchedTrainer, Kernels

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                                torch.nn.Linear(16, 3))
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    work = LocalWork(1, None, 5, 0.1, 0.9, 0.0)
    jobs = {c: ClientJob(torch.arange(10 * c, 10 * c + 10), work) for c in range(4)}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    local = BatchedTrainer(copy.deepcopy(model), x, y, resolve_placement("cpu"),
                           jobs, 7, work, 2)
    local.cohort(1, [0, 1, 2, 3])
    want = {c: local.train(c, 1, state).state for c in (2, 3)}
    actor = TrainingActor(model, SharedTensor.put(x), SharedTensor.put(y),
                          ActorSpec(7, work, True, 2, Kernels(), 1), "cpu")
    for chunk, same in ((1, True), (0, False)):  # chunk 0's masks train them differently
        got = actor.train(1, state, {c: jobs[c] for c in (2, 3)}, [Unit((2, 3), chunk)])
        assert all(torch.equal(got[c].state[k], want[c][k]) for c in (2, 3) for k in state) == same


def test_a_shared_tensor_keeps_its_strides(ray_instance):
    """A size-1 channel with stride 1 (as full MNIST's images have) makes convolutions take
    another memory format, so other float sums: the object store must not normalise it."""
    from fedsim.ray_backend import SharedTensor

    t = torch.from_numpy(torch.arange(12.0).reshape(3, 2, 2).numpy()[:, None])
    t = t.as_strided(t.shape, (4, 1, 2, 1))
    back = SharedTensor.put(t).get()
    assert back.stride() == (4, 1, 2, 1) and torch.equal(back, t)


def test_the_actors_are_gone_after_an_error(ray_instance):
    """The engine enters ray_trainer in an ExitStack: an error (or Ctrl-C) inside kills them."""
    from fedsim.ray_backend import ActorSpec, ray_trainer
    from fedsim.trainers import Kernels

    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    spec = ActorSpec(0, LocalWork(1, None, 4, 0.1, 0.0, 0.0), False, 2, Kernels(), 1)
    held = []
    with (pytest.raises(RuntimeError, match="boom"),
          ray_trainer(model, model, x, y, {}, spec, "cpu", 2) as (_, info)):
        held.append((info["ray_actors"], ray.available_resources().get("CPU", 0)))
        raise RuntimeError("boom")
    assert held == [(2, 0)] and _cpus_freed()
    assert _cpus_freed()
