"""Local training and evaluation: plain PyTorch, no simulation concepts (never imports simpy)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LocalTrainResult:
    """What one client's local training did."""

    steps: int
    samples: int  # samples processed (sum of batch sizes), for FLOP-based compute time
    mean_loss: float


def batch_schedule(n: int, *, batch_size: int, epochs: int | None, steps: int | None,
                   generator: torch.Generator) -> list[torch.Tensor]:
    """Index batches for local SGD: ``epochs`` shuffled passes, or ``steps`` batches.

    With ``steps``, batches are drawn from consecutive shuffled passes (reshuffled every pass),
    so every sample is seen once before any is seen twice.
    """
    batches: list[torch.Tensor] = []
    while True:
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            batches.append(perm[start:start + batch_size])
            if steps is not None and len(batches) == steps:
                return batches
        if epochs is not None and len(batches) >= epochs * -(-n // batch_size):
            return batches


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The forward pass's precision context: bfloat16 autocast for ``bf16``, off for ``fp32``."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def train_local(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                batches: list[torch.Tensor] | tuple[torch.Tensor, ...], *, lr: float,
                momentum: float = 0.0, weight_decay: float = 0.0,
                precision: str = "fp32") -> LocalTrainResult:
    """Minibatch SGD on ``(x, y)`` over the given index batches, in place on ``model``.

    ``batches`` must already be where ``x`` is (see :meth:`fedsim.placement.Placement.tensor`):
    the loop never copies to the device or reads a value back, so on CUDA the host only queues
    kernels; the mean loss is read once, at the end. ``precision`` is ``fp32`` or ``bf16``
    (forward and loss under bfloat16 autocast; weights and optimizer stay fp32).
    """
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    total, samples = None, 0  # summed loss, kept on the device
    for idx in batches:
        xb, yb = x[idx], y[idx]
        opt.zero_grad(set_to_none=True)
        with autocast(x.device, precision):
            loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        weighted = loss.detach().float() * len(idx)
        total = weighted if total is None else total + weighted
        samples += len(idx)
    mean_loss = float(total) / samples if total is not None else 0.0
    return LocalTrainResult(len(batches), samples, mean_loss)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 1000) -> tuple[float, float]:
    """Return (accuracy in [0, 1], mean cross-entropy loss) of ``model`` on ``(x, y)``."""
    model.eval()
    losses, hits = [], []
    for start in range(0, len(y), batch_size):
        out = model(x[start:start + batch_size])
        yb = y[start:start + batch_size]
        losses.append(F.cross_entropy(out, yb, reduction="sum").double())
        hits.append((out.argmax(1) == yb).sum())
    return int(torch.stack(hits).sum()) / len(y), float(torch.stack(losses).sum()) / len(y)
