"""What an adversary observes, and the forward models that simulate it for a candidate input.

Every attack in this package solves the same problem: find inputs ``x'`` (and possibly labels)
such that ``forward_model(x', y') ≈ observation.target``.  A scheme plugs in by providing a
:class:`ForwardModel`: plain gradients (:class:`GradientForwardModel`), a FedAvg weight
difference (:class:`UnrolledFedAvgForwardModel`), and later a dequantized FedPAQ update, an
encrypted-domain gradient or an ENN-isolated update.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call


@dataclass(frozen=True)
class Normalization:
    """Per-channel input normalization ``x_model = (x01 - mean) / std`` of images in [0, 1].

    Parameters
    ----------
    mean, std
        One value per channel (or a single value for all channels).
    """

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        shape = (-1, 1, 1) if like.dim() == 3 else (1, -1, 1, 1)
        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device).reshape(shape)
        std = torch.tensor(self.std, dtype=like.dtype, device=like.device).reshape(shape)
        return mean, std

    def normalize(self, images01: Tensor) -> Tensor:
        """Map images in [0, 1] (``(C,H,W)`` or ``(B,C,H,W)``) to model input space."""
        mean, std = self._stats(images01)
        return (images01 - mean) / std

    def denormalize(self, inputs: Tensor) -> Tensor:
        """Map model inputs back to image space (not clamped)."""
        mean, std = self._stats(inputs)
        return inputs * std + mean

    def bounds(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """Lower and upper box bounds of valid images in model input space, per channel."""
        mean, std = self._stats(like)
        return (0.0 - mean) / std, (1.0 - mean) / std


@runtime_checkable
class ForwardModel(Protocol):
    """Maps a candidate input batch and labels to the observation the adversary would see.

    ``labels`` are either class indices of shape ``(B,)`` or soft label probabilities of shape
    ``(B, num_classes)``.  The returned tensors must be differentiable w.r.t. both.
    """

    dtype: torch.dtype

    def __call__(self, inputs: Tensor, labels: Tensor) -> list[Tensor]:
        """Simulated observation for ``inputs`` (model input space) and ``labels``."""
        ...

    def as_gradients(self, observed: Sequence[Tensor]) -> list[Tensor] | None:
        """The observation as loss gradients (parameter order and sign), or None if hidden.

        Used by the analytic label rules, which read the last layer's gradient signs.
        """
        ...

    def describe(self) -> dict[str, Any]:
        """Plain-data description of the simulated scheme, for result records."""
        ...


@dataclass(frozen=True)
class Observation:
    """What the adversary attacks: observed tensors plus the shapes and preprocessing it knows.

    Labels are deliberately absent: they are either inferred by the attack or passed to it as
    explicit assumed knowledge.

    Parameters
    ----------
    target
        The observed tensors, in the order the forward model produces them.
    forward_model
        Simulates ``target`` for a candidate input.
    input_shape
        ``(B, C, H, W)`` of the private batch.
    num_classes
        Number of output classes.
    normalization
        Input normalization of the victim model (box constraints and metrics).
    """

    target: tuple[Tensor, ...]
    forward_model: ForwardModel
    input_shape: tuple[int, ...]
    num_classes: int
    normalization: Normalization = Normalization()

    @property
    def batch_size(self) -> int:
        """Number of private inputs ``B``."""
        return self.input_shape[0]


def label_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy against class indices ``(B,)`` or soft probabilities ``(B, C)``."""
    if labels.dim() == 1:
        return F.cross_entropy(logits, labels)
    return torch.mean(torch.sum(-labels * F.log_softmax(logits, dim=-1), dim=-1))


def _model_copy(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    clone = copy.deepcopy(model).to(dtype)
    clone.eval()
    for p in clone.parameters():
        p.requires_grad_(True)
    return clone


class GradientForwardModel:
    """Parameter gradients of the mean cross-entropy loss on one batch (FedSGD observation).

    Parameters
    ----------
    model
        The victim model at the observed weights; it is copied, cast to ``dtype`` and put in
        eval mode (the client's mode must match; LeNet-Zhu has no BN or dropout).
    dtype
        Precision of the simulation (float64 makes L-BFGS more reliable on CPU).
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.float64) -> None:
        self.model = _model_copy(model, dtype)
        self.dtype = dtype
        self._params = [p for p in self.model.parameters() if p.requires_grad]

    def __call__(self, inputs: Tensor, labels: Tensor) -> list[Tensor]:
        loss = label_loss(self.model(inputs), labels)
        return list(torch.autograd.grad(loss, self._params, create_graph=True))

    def as_gradients(self, observed: Sequence[Tensor]) -> list[Tensor] | None:
        return list(observed)

    def describe(self) -> dict[str, Any]:
        return {"kind": "gradient", "dtype": str(self.dtype).removeprefix("torch.")}


class ProjectedForwardModel:
    """What a linear code keeps of another forward model's output: each coded parameter's
    tensor, viewed as ``(a, cols)``, projected to ``U U^T`` of its code (the code-aware attack
    on ENN layer codes); other tensors pass unchanged.

    Parameters
    ----------
    inner
        The forward model whose outputs are one tensor per parameter of ``model``.
    model
        The victim model (its parameter names, in the inner model's output order).
    codes
        Parameter name -> code ``U`` (``a x r``, orthonormal columns).
    """

    def __init__(self, inner: ForwardModel, model: nn.Module, codes: dict[str, Tensor]) -> None:
        self.inner = inner
        self.dtype = inner.dtype
        self._codes = [codes[n].to(self.dtype) if n in codes else None
                       for n, p in model.named_parameters() if p.requires_grad]

    def __call__(self, inputs: Tensor, labels: Tensor) -> list[Tensor]:
        out = self.inner(inputs, labels)
        return [o if u is None else (u @ (u.T @ o.reshape(u.shape[0], -1))).reshape(o.shape)
                for o, u in zip(out, self._codes)]

    def as_gradients(self, observed: Sequence[Tensor]) -> list[Tensor] | None:
        return self.inner.as_gradients(observed)

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "projected": "linear code"}


def unrolled_sgd_delta(model: nn.Module, start: dict[str, Tensor], lr: float, inputs: Tensor,
                       labels: Tensor, batches: Iterable[slice | Tensor]) -> list[Tensor]:
    """``θ_K − θ_0`` of plain SGD from ``start`` over the given row batches, differentiable in the inputs."""
    params = {k: v.clone().requires_grad_(True) for k, v in start.items()}
    for rows in batches:
        logits = functional_call(model, params, (inputs[rows],))
        loss = label_loss(logits, labels[rows])
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        params = {k: p - lr * g for (k, p), g in zip(params.items(), grads)}
    return [params[k] - start[k] for k in start]


class UnrolledFedAvgForwardModel:
    """Weight difference ``θ_K − θ_0`` after ``steps`` local SGD steps (FedAvg observation).

    The local steps are unrolled inside the autograd graph, so the difference is differentiable
    w.r.t. the candidate input.  With ``batch_size == 0`` every step uses the whole batch;
    otherwise step ``i`` uses mini-batch ``i mod (B / batch_size)`` in order.

    Parameters
    ----------
    model
        Victim model at the broadcast weights ``θ_0`` (copied, cast, eval mode).
    lr
        Client learning rate (assumed known).
    steps
        Number of local steps ``K`` (assumed known).
    batch_size
        Local mini-batch size, 0 for full batch.
    dtype
        Precision of the simulation.
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float,
        steps: int,
        batch_size: int = 0,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        if lr <= 0 or steps < 1 or batch_size < 0:
            raise ValueError('"lr" must be > 0, "steps" >= 1 and "batch_size" >= 0.')
        self.model = _model_copy(model, dtype)
        self.dtype = dtype
        self.lr, self.steps, self.batch_size = lr, steps, batch_size
        self._start = {n: p.detach() for n, p in self.model.named_parameters()}

    def __call__(self, inputs: Tensor, labels: Tensor) -> list[Tensor]:
        n = inputs.shape[0]
        size = n if self.batch_size == 0 else self.batch_size
        n_batches = max(n // size, 1)
        batches = (slice((step % n_batches) * size, (step % n_batches + 1) * size)
                   for step in range(self.steps))
        return unrolled_sgd_delta(self.model, self._start, self.lr, inputs, labels, batches)

    def as_gradients(self, observed: Sequence[Tensor]) -> list[Tensor] | None:
        """``−Δ / (lr·K)``: exact for one step, the mean-gradient approximation for several."""
        return [-d / (self.lr * self.steps) for d in observed]

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "fedavg_unrolled",
            "lr": self.lr,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "dtype": str(self.dtype).removeprefix("torch."),
        }


def observe(forward_model: ForwardModel, inputs: Tensor, labels: Tensor) -> tuple[Tensor, ...]:
    """Detached observation of the true private batch (what the adversary would receive)."""
    inputs = inputs.to(forward_model.dtype)
    return tuple(t.detach() for t in forward_model(inputs, labels))
