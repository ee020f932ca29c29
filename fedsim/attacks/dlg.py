"""DLG (Zhu et al. 2019) and iDLG (Zhao et al. 2020): L2 gradient matching with L-BFGS.

DLG optimises the dummy input and dummy label logits jointly (soft-label cross-entropy);
iDLG first reads the label from the last layer's gradient and optimises the input only.
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
class DlgConfig:
    """Hyperparameters of DLG/iDLG; defaults are the DLG reference code's (mit-han-lab/dlg).

    Parameters
    ----------
    label_strategy
        ``"joint"`` (DLG: soft labels optimised with the input), ``"idlg"``, ``"bias"`` or
        ``"known"``.
    outer_steps
        Number of ``LBFGS.step`` calls (300 in both references).
    lr, max_iter, history_size, tolerance_grad, tolerance_change, line_search_fn
        ``torch.optim.LBFGS`` arguments (PyTorch defaults; no line search).
    stop_loss
        Stop once the gradient loss falls below this (iDLG: 1e-6; DLG: never).
    restarts
        Number of independent random starts (drawn one after another from the attack's seeded
        generator); the run with the lowest final gradient-matching loss is returned.  1 is the
        references' single start and reproduces it draw for draw.
    """

    label_strategy: Literal["joint", "idlg", "bias", "known"] = "joint"
    outer_steps: int = 300
    lr: float = 1.0
    max_iter: int = 20
    history_size: int = 100
    tolerance_grad: float = 1e-7
    tolerance_change: float = 1e-9
    line_search_fn: str | None = None
    stop_loss: float | None = None
    restarts: int = 1

    def __post_init__(self) -> None:
        if self.restarts < 1:
            raise ValueError(f'"restarts" must be >= 1, got {self.restarts}')


#: DLG as in its reference code.
DLG = DlgConfig()
#: iDLG as in its reference code: analytic label, input-only L-BFGS, early stop at 1e-6.
IDLG = DlgConfig(label_strategy="idlg", stop_loss=1e-6)


def l2_distance(simulated: Sequence[Tensor], observed: Sequence[Tensor]) -> Tensor:
    """Squared L2 distance summed over all observed tensors (DLG's objective)."""
    return sum(((s - o) ** 2).sum() for s, o in zip(simulated, observed, strict=True))


def _trial(
    observation: Observation,
    config: DlgConfig,
    hard: Tensor | None,
    target: list[Tensor],
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, float, list[float], int, int]:
    """One L-BFGS run from a random start; returns its best iterate and bookkeeping."""
    fm = observation.forward_model
    x = random_candidate(observation, generator).requires_grad_(True)
    variables = [x]
    logits = None
    if hard is None:
        shape = (observation.batch_size, observation.num_classes)
        logits = torch.randn(shape, generator=generator, dtype=fm.dtype).requires_grad_(True)
        variables.append(logits)
    optimizer = torch.optim.LBFGS(
        variables,
        lr=config.lr,
        max_iter=config.max_iter,
        history_size=config.history_size,
        tolerance_grad=config.tolerance_grad,
        tolerance_change=config.tolerance_change,
        line_search_fn=config.line_search_fn,
    )
    evals = 0

    def current_labels() -> Tensor:
        return hard if logits is None else torch.softmax(logits, dim=-1)

    def closure() -> Tensor:
        nonlocal evals
        evals += 1
        optimizer.zero_grad()
        loss = l2_distance(fm(x, current_labels()), target)
        loss.backward()
        return loss

    best_loss, best_x, best_y = math.inf, x.detach().clone(), current_labels().detach()
    trace: list[float] = []
    steps = 0
    for steps in range(1, config.outer_steps + 1):
        optimizer.step(closure)
        loss = float(l2_distance(fm(x, current_labels()), target).detach())
        trace.append(loss)
        if not math.isfinite(loss):
            break
        if loss < best_loss:
            best_loss, best_x, best_y = loss, x.detach().clone(), current_labels().detach()
        if config.stop_loss is not None and loss < config.stop_loss:
            break
    return best_x, best_y, best_loss, trace, steps, evals


def dlg_attack(
    observation: Observation,
    config: DlgConfig = DLG,
    seed: int = 0,
    labels: Tensor | None = None,
) -> AttackResult:
    """Reconstruct the private batch by L2 gradient matching with L-BFGS.

    Parameters
    ----------
    observation
        Observed tensors and the forward model that simulates them.
    config
        Frozen hyperparameters (:data:`DLG`, :data:`IDLG` or a variant).
    seed
        Seed of the dummy input and dummy label initialisations (all restarts).
    labels
        True labels, only with ``label_strategy="known"`` (assumed knowledge).

    Returns
    -------
    AttackResult
        Of the ``config.restarts`` runs, the one with the lowest final gradient-matching loss
        (ground truth is never consulted); within a run, the iterate with the lowest gradient
        loss seen after any outer step (a divergent L-BFGS run therefore keeps its last finite
        iterate).  ``iterations`` and ``function_evals`` are summed over restarts.
    """
    start = time.perf_counter()
    hard = resolve_labels(observation, config.label_strategy, labels)
    generator = torch.Generator().manual_seed(seed)
    fm = observation.forward_model
    target = [t.to(fm.dtype) for t in observation.target]
    trials = [_trial(observation, config, hard, target, generator)
              for _ in range(config.restarts)]
    scores = [t[2] for t in trials]
    best = min(range(len(trials)), key=scores.__getitem__)
    best_x, best_y, best_loss, trace, _, _ = trials[best]
    recovered = best_y if hard is not None else best_y.argmax(dim=-1)
    return AttackResult(
        reconstruction=best_x,
        labels=recovered,
        iterations=sum(t[4] for t in trials),
        final_grad_loss=best_loss,
        host_seconds=time.perf_counter() - start,
        config=config,
        seed=seed,
        label_source=config.label_strategy,
        trace=tuple(trace),
        extras={
            "function_evals": sum(t[5] for t in trials),
            "restart_scores": tuple(scores),
            "best_restart": best,
            **{f"fm_{k}": v for k, v in fm.describe().items()},
        },
    )


def settings_in_run(a: AttackConfig, strategy: str, encrypted: bool) -> DlgConfig:
    """DLG/iDLG hyperparameters of an attack inside a run (``attack.dlg``)."""
    return DlgConfig(label_strategy=strategy, line_search_fn=None, **a.dlg.model_dump())


ATTACKS.register("idlg", AttackMethod(settings_in_run, dlg_attack))
ATTACKS.register("dlg", AttackMethod(settings_in_run, dlg_attack, joint_labels=True))
