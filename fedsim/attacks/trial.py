"""One end-to-end FedSGD attack trial: observe a private batch, defend, attack, score."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from fedsim.attacks.defences import Defence, relative_error
from fedsim.attacks.metrics import ReconstructionMetrics, evaluate
from fedsim.attacks.observation import GradientForwardModel, Normalization, Observation, observe
from fedsim.attacks.result import AttackResult
from fedsim.rng import seed_for

Attack = Callable[..., AttackResult]


def gradient_trial(
    model: nn.Module,
    images01: Tensor,
    labels: Tensor,
    attack: Attack,
    config: Any,
    seed: int,
    *,
    num_classes: int,
    normalization: Normalization | None = None,
    defence: Defence | None = None,
    mean_image: Tensor | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[AttackResult, ReconstructionMetrics, dict[str, Any]]:
    """Attack the gradient of one private batch (adversary S on plain FedSGD).

    Parameters
    ----------
    model
        Victim model at the observed weights.
    images01, labels
        Private batch: images in [0, 1] ``(B, C, H, W)`` and class indices ``(B,)``.
    attack, config
        E.g. ``dlg_attack`` with ``IDLG``; labels are passed only for ``"known"`` strategies.
    seed
        Seed of the attack (and of the defence noise).
    num_classes
        Number of model outputs.
    normalization
        Input normalization the model was trained with (None: identity).
    defence
        Transform applied to the observed gradient before the attack (seeded with ``seed``).
    mean_image
        Dataset mean image for the mean-image baseline.
    dtype
        Precision of the client's gradient and of the attack.

    Returns
    -------
    tuple
        The attack result, its metrics, and a flat result row.
    """
    normalization = normalization or Normalization()
    fm = GradientForwardModel(model, dtype=dtype)
    inputs = normalization.normalize(images01.to(dtype))
    target = observe(fm, inputs, labels)
    clean = target
    if defence is not None:
        target = defence(clean, seed_for(seed, "defence"))
    observation = Observation(target, fm, tuple(inputs.shape), num_classes, normalization)
    known = labels if getattr(config, "label_strategy", "") == "known" else None
    result = attack(observation, config, seed=seed, labels=known)
    metrics = evaluate(
        result.reconstruction, inputs, normalization, result.labels, labels, mean_image
    )
    row = {
        "scheme": "fedsgd",
        "adversary": "S",
        "knowledge": "labels" if known is not None else "none",
        "defence": "none",
        **(defence.describe() if defence is not None else {}),
        "observation_rel_error": relative_error(target, clean),
        **result.record(),
        **metrics.summary(),
    }
    return result, metrics, row
