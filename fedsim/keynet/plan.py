"""Walk a model into what KeyNet needs: lowered layers, their activations, and the key slots.

A model is a *chain* when its leaf modules, run in registration order, reproduce its forward pass
and every leaf is lowerable (Conv2d, Linear, AvgPool2d, AdaptiveAvgPool2d), an elementwise
activation, or shape-only (Flatten, Dropout, Identity). Chains get chained keys
(``Ŵ_i = A_i M_i A_{i-1}⁻¹``) and support encrypted inference. Anything else (residual blocks,
BatchNorm, MaxPool) is encrypted for transmission only, with independent keys per lowered layer.
Parameters that no lowered entry reads (BatchNorm, kernel taps that never touch the input, any
other tensor) form the *rest* vector, encrypted with one vector key.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedsim.domain import float_entries
from fedsim.keynet.keys import KeySlot
from fedsim.keynet.lowering import LOWERABLE, Lowered, lower_module

POSITIVE_HOMOGENEOUS = (nn.ReLU, nn.LeakyReLU)
ELEMENTWISE = POSITIVE_HOMOGENEOUS + (nn.ReLU6, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU,
                                      nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus)
SHAPE_ONLY = (nn.Flatten, nn.Dropout, nn.Identity)


@dataclass(frozen=True)
class LayerPlan:
    """One lowered layer: module path, the lowering, and the activations that follow (chains)."""

    name: str
    lowered: Lowered
    acts: tuple[nn.Module, ...] = ()


@dataclass(frozen=True)
class NetworkPlan:
    """Layout of a model's federated parameters and its lowered layers.

    Attributes
    ----------
    names, shapes : list
        Float state entries (``fedsim.domain.float_entries`` order) and their shapes.
    offsets : np.ndarray
        Start of each entry in the flat parameter vector ``theta`` (length ``len(names) + 1``).
    layers : list[LayerPlan]
        Lowered layers in execution order.
    chained : bool
        Whether keys chain across layers (and encrypted inference is possible).
    rest : np.ndarray
        Indices into ``theta`` that no lowered entry reads, encrypted with a vector key.
    input_shape : tuple[int, ...]
        Shape of one input sample, e.g. ``(1, 28, 28)``.
    """

    names: list[str]
    shapes: list[tuple[int, ...]]
    offsets: np.ndarray
    layers: list[LayerPlan]
    chained: bool
    rest: np.ndarray
    input_shape: tuple[int, ...]

    @property
    def n_params(self) -> int:
        """Length of the flat parameter vector."""
        return int(self.offsets[-1])

    def key_slots(self, alpha: int = 1, encrypt_output: bool = False) -> list[KeySlot]:
        """Key slots for the lowered space.

        Chains: one slot per boundary (input, then each layer output), ``α = 1`` where an
        activation follows (gains only for ReLU/LeakyReLU), ``alpha`` elsewhere; the output
        boundary is the identity unless ``encrypt_output``. Otherwise two independent slots
        (input, output) per layer with block size ``alpha``. Last: the rest vector key.
        """
        slots = []
        if self.chained:
            slots.append(KeySlot(self.layers[0].lowered.n_in, alpha, role="input"))
            for i, lp in enumerate(self.layers):
                last = i == len(self.layers) - 1
                role = "output" if last else f"{lp.name}.out"
                if lp.acts:
                    gains = all(isinstance(a, POSITIVE_HOMOGENEOUS) for a in lp.acts)
                    slots.append(KeySlot(lp.lowered.n_out, 1, gains, role=role))
                else:
                    identity = last and not encrypt_output
                    slots.append(KeySlot(lp.lowered.n_out, 1 if identity else alpha,
                                         identity=identity, role=role))
        else:
            for lp in self.layers:
                slots.append(KeySlot(lp.lowered.n_in, alpha, role=f"{lp.name}.in"))
                slots.append(KeySlot(lp.lowered.n_out, alpha, role=f"{lp.name}.out"))
        slots.append(KeySlot(int(self.rest.size), 1, role="rest"))
        return slots


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())]


def _param_offsets(model: nn.Module, names: list[str], offsets: np.ndarray):
    index = {n: int(o) for n, o in zip(names, offsets[:-1])}

    def offs(path: str, module: nn.Module) -> tuple[int | None, int | None]:
        pre = f"{path}." if path else ""
        w = index.get(pre + "weight") if getattr(module, "weight", None) is not None else None
        b = index.get(pre + "bias") if getattr(module, "bias", None) is not None else None
        if isinstance(module, (nn.Conv2d, nn.Linear)) and w is None:
            raise ValueError(f"{path}.weight is not a float state entry")
        return w, b

    return offs


def _try_chain(model: nn.Module, input_shape: tuple[int, ...]):
    """Leaves as a chain of (name, module) if they reproduce ``model``'s forward, else None."""
    leaves = [(n, m) for n, m in _leaves(model) if not isinstance(m, SHAPE_ONLY)]
    if not leaves or not isinstance(leaves[0][1], LOWERABLE):
        return None
    if any(not isinstance(m, LOWERABLE + ELEMENTWISE) for _, m in leaves):
        return None
    x = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        try:
            ref = model(x)
            z = x
            for _, m in leaves:
                z = m(z.flatten(1) if isinstance(m, nn.Linear) else z)
        except (RuntimeError, TypeError, ValueError):
            return None
    if z.shape != ref.shape or not torch.allclose(z, ref, rtol=1e-4, atol=1e-5):
        return None
    return leaves


def _input_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Per-sample input shape of every Conv2d / Linear, recorded with forward hooks."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            def hook(mod, args, name=name):
                if name in shapes:
                    raise ValueError(f"{name} is called more than once (shared weights)")
                shapes[name] = tuple(args[0].shape[1:])
            hooks.append(m.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
    return shapes


def plan_network(model: nn.Module, input_shape: tuple[int, ...],
                 chained: bool | None = None, lower: bool = True) -> NetworkPlan:
    """Build the :class:`NetworkPlan` of ``model`` for inputs of shape ``input_shape``.

    ``chained=None`` detects chains automatically; ``False`` forces per-layer keys; ``True``
    raises if the model is not a chain. ``lower=False`` only lays out the parameters (no
    lowered layers; everything is "rest"), which is all the channel space needs.
    """
    was_training = model.training
    model.eval()
    try:
        state = model.state_dict()
        names = float_entries(state)
        shapes = [tuple(state[k].shape) for k in names]
        offsets = np.concatenate([[0], np.cumsum([state[k].numel() for k in names])]).astype(int)
        offs = _param_offsets(model, names, offsets)
        chain = _try_chain(model, tuple(input_shape)) if chained is not False and lower else None
        if chained and chain is None:
            raise ValueError("model is not a chain of lowerable layers and activations")
        layers: list[LayerPlan] = []
        if chain is not None:
            shape = tuple(input_shape)
            for name, m in chain:
                if isinstance(m, ELEMENTWISE):
                    last = layers[-1]
                    layers[-1] = LayerPlan(last.name, last.lowered, last.acts + (m,))
                    continue
                if isinstance(m, nn.Linear):
                    shape = (int(np.prod(shape)),)
                low = lower_module(m, shape, *offs(name, m))
                layers.append(LayerPlan(name, low))
                shape = low.out_shape
        elif lower:
            in_shapes = _input_shapes(model, tuple(input_shape))
            for name, m in model.named_modules():
                if name in in_shapes:
                    layers.append(LayerPlan(name, lower_module(m, in_shapes[name], *offs(name, m))))
    finally:
        model.train(was_training)
    covered = np.zeros(int(offsets[-1]), dtype=bool)
    for lp in layers:
        covered[lp.lowered.src[lp.lowered.src >= 0]] = True
    return NetworkPlan(names, shapes, offsets, layers, chain is not None,
                       np.flatnonzero(~covered), tuple(input_shape))
