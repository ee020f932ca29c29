"""Local training and evaluation: plain PyTorch, no simulation concepts (never imports simpy)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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


def train_local(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batches: list[torch.Tensor], *,
                lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> LocalTrainResult:
    """Minibatch SGD on ``(x, y)`` over the given index batches, in place on ``model``."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    total, samples = torch.zeros((), device=x.device), 0
    for idx in batches:
        idx = idx.to(x.device)
        xb, yb = x[idx], y[idx]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        total += loss.detach() * len(idx)
        samples += len(idx)
    return LocalTrainResult(len(batches), samples, float(total) / max(samples, 1))


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 1000) -> tuple[float, float]:
    """Return (accuracy in [0, 1], mean cross-entropy loss) of ``model`` on ``(x, y)``."""
    model.eval()
    correct, loss = 0, 0.0
    for start in range(0, len(y), batch_size):
        out = model(x[start:start + batch_size])
        yb = y[start:start + batch_size]
        loss += float(F.cross_entropy(out, yb, reduction="sum"))
        correct += int((out.argmax(1) == yb).sum())
    return correct / len(y), loss / len(y)
