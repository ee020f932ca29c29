"""GPU checks: the engine trains on CUDA when present and learns what the CPU run learns."""

import pytest
import torch

from fedsim.engine import run
from fedsim.scenario import load_scenario


@pytest.mark.gpu
def test_quickstart_runs_on_cuda_and_learns():
    cfg = load_scenario("scenarios/quickstart.yaml", ["rounds=3"]).runs[0]
    result = run(cfg)
    assert result.info["device"].startswith("cuda")
    assert result.rounds["test_accuracy"].iloc[-1] > 0.8
    assert torch.cuda.max_memory_allocated() > 0
