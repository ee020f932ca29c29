"""The attack result record and helpers shared by the optimisation attacks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from fedsim.attacks.labels import infer_labels
from fedsim.attacks.observation import Observation


@dataclass(frozen=True)
class AttackResult:
    """Outcome of one attack run.

    Parameters
    ----------
    reconstruction
        Recovered inputs in model input space, shape ``(B, C, H, W)`` (denormalize for metrics).
    labels
        Recovered (or assumed known) class indices, shape ``(B,)``.
    iterations
        Optimiser steps taken (outer L-BFGS steps or Adam iterations, summed over restarts).
    final_grad_loss
        Gradient-matching loss of the returned candidate, without regularisers.
    host_seconds
        Wall time of the attack on this host, in seconds.
    config
        The frozen attack configuration that produced this result.
    seed
        Seed of the attack's random streams.
    label_source
        ``"known"``, ``"idlg"``, ``"bias"`` or ``"joint"``.
    trace
        Gradient-matching loss after each outer step of the returned run.
    extras
        Attack-specific counters (function evaluations, restart scores, forward model).
    """

    reconstruction: Tensor
    labels: Tensor
    iterations: int
    final_grad_loss: float
    host_seconds: float
    config: Any
    seed: int
    label_source: str
    trace: tuple[float, ...] = ()
    extras: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """Flat plain-data summary (config fields prefixed ``cfg_``) for result tables."""
        row: dict[str, Any] = {
            "attack": type(self.config).__name__,
            "seed": self.seed,
            "label_source": self.label_source,
            "iterations": self.iterations,
            "final_grad_loss": self.final_grad_loss,
            "host_seconds": self.host_seconds,
        }
        row.update({f"cfg_{k}": v for k, v in dataclasses.asdict(self.config).items()})
        row.update({k: v for k, v in self.extras.items() if isinstance(v, (int, float, str))})
        return row


def resolve_labels(observation: Observation, strategy: str, labels: Tensor | None) -> Tensor | None:
    """Hard labels for the attack, or None when they are optimised jointly.

    ``"known"`` requires ``labels`` (assumed adversary knowledge); ``"idlg"``/``"bias"`` infer
    them from the observation; ``"joint"`` returns None.  Passing labels with another strategy
    is an error, so the recorded strategy always says where the labels came from.
    """
    if strategy == "known":
        if labels is None:
            raise ValueError('label strategy "known" needs labels')
        return labels.detach().to(torch.long).reshape(observation.batch_size)
    if labels is not None:
        raise ValueError(f'labels were given but the label strategy is "{strategy}"')
    if strategy == "joint":
        return None
    return infer_labels(observation, strategy)


def random_candidate(observation: Observation, generator: torch.Generator) -> Tensor:
    """``x' ~ N(0, 1)`` in the forward model's dtype, shaped like the private batch."""
    dtype = observation.forward_model.dtype
    return torch.randn(observation.input_shape, generator=generator, dtype=dtype)
