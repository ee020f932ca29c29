"""CUDA runs against CPU runs of the same scenario (``pytest -m gpu``; skipped without a GPU).

Simulated time and bytes come from counted FLOPs and real payload sizes, never from the host, so
they must be identical. Weights may differ by float order (cuDNN/cuBLAS kernels sum in another
order than the CPU's), so accuracies are compared within 1 percentage point after 15 rounds.
"""

import pandas as pd
import pytest
import torch

from fedsim.engine import run
from fedsim.scenario import load_scenario

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

SIM_COLUMNS = ["round", "sim_time_start", "sim_time_end", "n_selected", "n_completed",
               "bytes_down", "bytes_up", "bytes_keys"]


def _pair(path: str, overrides: list[str]):
    cfgs = [load_scenario(path, [*overrides, f"compute.torch_device={d}"]).runs[0]
            for d in ("cuda", "cpu")]
    return run(cfgs[0]), run(cfgs[1])


def test_quickstart_on_cuda_equals_the_cpu_run_in_time_and_bytes():
    gpu, cpu = _pair("scenarios/quickstart.yaml", ["rounds=15"])
    assert gpu.info["torch_device"].startswith("cuda") and gpu.info["gpu_name"]
    assert torch.cuda.max_memory_allocated() > 0
    pd.testing.assert_frame_equal(gpu.messages, cpu.messages)
    pd.testing.assert_frame_equal(gpu.rounds[SIM_COLUMNS], cpu.rounds[SIM_COLUMNS])
    acc_gpu, acc_cpu = gpu.rounds["test_accuracy"].iloc[-1], cpu.rounds["test_accuracy"].iloc[-1]
    assert acc_gpu > 0.9
    assert abs(acc_gpu - acc_cpu) <= 0.01


def test_keynet_on_cuda_equals_plaintext_on_cuda_and_the_cpu_timeline():
    base = ["rounds=3", "model.pooling=avg", "data.train_limit=1000"]
    key = [*base, "encryption={kind: keynet, gains: power_of_two}"]
    plain_gpu, _ = _pair("scenarios/quickstart.yaml", base)
    key_gpu, key_cpu = _pair("scenarios/quickstart.yaml", key)
    pd.testing.assert_frame_equal(key_gpu.messages, key_cpu.messages)
    # power-of-two keys make encrypted arithmetic exact: same device, same kernels, same weights
    assert key_gpu.rounds["test_accuracy"].tolist() == plain_gpu.rounds["test_accuracy"].tolist()
