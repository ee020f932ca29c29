"""Models shared by the KeyNet tests."""

from __future__ import annotations

import torch

from fedsim.models import build_model

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
