"""Inverting Gradients (Geiping et al. 2020): cosine gradient matching with a TV prior.

Also the FedAvg variant: pass an observation whose forward model unrolls the client's local
steps (:class:`~fedsim.attacks.observation.UnrolledFedAvgForwardModel`); the optimisation is the
same because every attack only matches ``forward_model(x') ≈ observed``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from fedsim.attacks.contracts import AttackMethod
from fedsim.attacks.observation import Observation
from fedsim.attacks.result import AttackResult, random_candidate, resolve_labels
from fedsim.config.registry import ATTACKS

if TYPE_CHECKING:
    from fedsim.config import AttackConfig


@dataclass(frozen=True)
class InvertingConfig:
    """Hyperparameters of Inverting Gradients; defaults are the paper's untrained-LeNet setting.

    Parameters
    ----------
    iterations
        Adam iterations per restart ``T``.
    lr
        Adam learning rate.
    signed
        Feed the sign of the objective's gradient to Adam.
    boxed
        Clamp the candidate to the valid image box (in normalised coordinates) after each step.
    tv_weight
        Weight ``α`` of the anisotropic total variation (mean absolute neighbour differences).
    restarts
        Independent trials; the one with the lowest gradient loss (without TV) wins.
    lr_decay
        Multiply the lr by 0.1 at the milestones ``T//2.667, T//1.6, T//1.142``.
    label_strategy
        ``"idlg"``, ``"bias"`` or ``"known"``.
    """

    iterations: int = 4800
    lr: float = 0.1
    signed: bool = True
    boxed: bool = True
    tv_weight: float = 1e-2
    restarts: int = 1
    lr_decay: bool = True
    label_strategy: Literal["idlg", "bias", "known"] = "idlg"


#: Paper setting for the untrained LeNet-Zhu (Appendix C.1, via a reproduction note).
IG_PAPER_LENET = InvertingConfig()
#: The IG library's ``DEFAULT_CONFIG`` (unsigned Adam, TV 0.1).
IG_LIBRARY_DEFAULT = InvertingConfig(signed=False, tv_weight=0.1)
#: The IG notebooks' FedAvg setting for a single image (attack lr 0.1, 8000 iterations).
IG_FEDAVG_SINGLE = InvertingConfig(iterations=8000, tv_weight=1e-6)


def milestones(iterations: int) -> tuple[int, int, int]:
    """Learning-rate milestones of the reference schedule (1799, 2999, 4203 for T = 4800)."""
    return tuple(int(iterations // f) for f in (2.667, 1.6, 1.142))  # type: ignore[return-value]


def cosine_distance(simulated: Sequence[Tensor], observed: Sequence[Tensor]) -> Tensor:
    """``1 − cos`` with dot product and norms summed over all tensors (one global cosine)."""
    dot = sum((s * o).sum() for s, o in zip(simulated, observed, strict=True))
    norm_s = sum((s**2).sum() for s in simulated)
    norm_o = sum((o**2).sum() for o in observed)
    return 1 - dot / (norm_s.sqrt() * norm_o.sqrt())


def total_variation(x: Tensor) -> Tensor:
    """Anisotropic TV: mean |horizontal difference| + mean |vertical difference|."""
    dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean()
    dy = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean()
    return dx + dy


def _trial(
    observation: Observation,
    config: InvertingConfig,
    labels: Tensor,
    target: list[Tensor],
    generator: torch.Generator,
) -> tuple[Tensor, float, list[float], int]:
    fm = observation.forward_model
    x = random_candidate(observation, generator).requires_grad_(True)
    lower, upper = observation.normalization.bounds(x.detach())
    optimizer = torch.optim.Adam([x], lr=config.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer,
        milestones=list(milestones(config.iterations)) if config.lr_decay else [],
        gamma=0.1,
    )
    trace: list[float] = []
    steps = 0
    for steps in range(1, config.iterations + 1):
        optimizer.zero_grad()
        match = cosine_distance(fm(x, labels), target)
        loss = match + config.tv_weight * total_variation(x) if config.tv_weight else match
        loss.backward()
        trace.append(float(match.detach()))
        if not math.isfinite(trace[-1]):
            break
        if config.signed:
            x.grad.sign_()
        optimizer.step()
        scheduler.step()
        if config.boxed:
            with torch.no_grad():
                x.copy_(torch.maximum(torch.minimum(x, upper), lower))
    score = float(cosine_distance(fm(x, labels), target).detach())
    return x.detach(), score if math.isfinite(score) else math.inf, trace, steps


def inverting_attack(
    observation: Observation,
    config: InvertingConfig = IG_PAPER_LENET,
    seed: int = 0,
    labels: Tensor | None = None,
) -> AttackResult:
    """Reconstruct the private batch by cosine gradient matching with signed Adam.

    The arguments are :func:`fedsim.attacks.dlg.dlg_attack`'s, with ``config`` the frozen IG
    hyperparameters and ``seed`` seeding the restarts' random initialisations. Returns the final
    iterate of the restart with the lowest gradient loss (TV excluded); ground truth is never
    consulted.
    """
    start = time.perf_counter()
    hard = resolve_labels(observation, config.label_strategy, labels)
    generator = torch.Generator().manual_seed(seed)
    target = [t.to(observation.forward_model.dtype) for t in observation.target]
    assert hard is not None  # "joint" is not an IG strategy
    trials = [_trial(observation, config, hard, target, generator) for _ in range(config.restarts)]
    scores = [t[1] for t in trials]
    best = min(range(len(trials)), key=scores.__getitem__)
    x, score, trace, _ = trials[best]
    return AttackResult(
        reconstruction=x,
        labels=hard,
        iterations=sum(t[3] for t in trials),
        final_grad_loss=score,
        host_seconds=time.perf_counter() - start,
        config=config,
        seed=seed,
        label_source=config.label_strategy,
        trace=tuple(trace),
        extras={
            "restart_scores": tuple(scores),
            "best_restart": best,
            **{f"fm_{k}": v for k, v in observation.forward_model.describe().items()},
        },
    )


def settings_in_run(a: AttackConfig, strategy: str, encrypted: bool) -> InvertingConfig:
    """Inverting Gradients hyperparameters of an attack inside a run (``attack.ig``); no total
    variation in the encrypted domain (it assumes a spatial smoothness encrypted images lack)."""
    tv = 0.0 if encrypted else a.ig.tv_weight
    return InvertingConfig(label_strategy=strategy, **{**a.ig.model_dump(), "tv_weight": tv})


ATTACKS.register("ig", AttackMethod(settings_in_run, inverting_attack))
