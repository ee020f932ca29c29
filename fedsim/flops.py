"""FLOPs per sample for a forward pass and for one training step (forward + backward).

Convention: one multiply-add = 2 FLOPs, as ``torch.utils.flop_counter`` counts; only matmul-like
ops (convolutions, linear layers, matmuls, attention) are counted. Biases, activations,
pooling, BatchNorm, dropout, the loss and the optimizer step are not counted.

Counting runs ``FlopCounterMode`` on a deep copy of the model in training mode with a batch of 2
(divided by 2). The training count is forward + ``output.sum().backward()``; the input does not
require grad, so the first layer computes no input gradient (as in real training): a conv or
linear layer costs 3× its forward (grad input + grad weight), the first layer 2×.

Correction: ``flop_counter``'s ``convolution_backward`` formula ignores ``groups`` when
counting the weight gradient, which over-counts it ``groups``-fold (a depthwise conv with 96
channels came out ~98× its forward instead of 3×). :func:`_conv_backward_flop` replaces it with
a count where the grad-input and grad-weight convolutions each cost exactly the forward FLOPs.
"""

from __future__ import annotations

import copy
from math import prod

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

_aten = torch.ops.aten
_BATCH = 2
_CACHE: dict[tuple, tuple[float, float]] = {}


def _conv_forward_flop(
    x_shape: list[int], w_shape: list[int], out_shape: list[int], transposed: bool
) -> int:
    """2 · batch · prod(spatial) · prod(kernel) · C_out_w · C_in_w, with ``w_shape`` as stored.

    The stored weight is (C_out, C_in/groups, k...) for a conv and (C_in, C_out/groups, k...)
    for a transposed conv, so its first two dims already give the per-group channel product.
    The spatial size is the output's for a conv and the input's for a transposed conv.
    """
    spatial = (x_shape if transposed else out_shape)[2:]
    return 2 * x_shape[0] * prod(spatial) * prod(w_shape)


def _conv_backward_flop(
    grad_out_shape: list[int],
    x_shape: list[int],
    w_shape: list[int],
    _bias: object,
    _stride: object,
    _padding: object,
    _dilation: object,
    transposed: bool,
    _output_padding: object,
    _groups: int,
    output_mask: list[bool],
    out_shape: object = None,
    **kwargs: object,
) -> int:
    """Backward of a (grouped) convolution: forward FLOPs once per requested gradient.

    grad input is the transposed convolution of grad output with the weight and grad weight
    the correlation of input with grad output; each has exactly the forward's multiply-adds,
    for any ``groups``. The bias gradient (a reduction) is not counted.
    """
    forward = _conv_forward_flop(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _count(model: nn.Module, input_shape: tuple[int, int, int]) -> tuple[float, float]:
    """(forward, forward + backward) FLOPs per sample; cached per model config and input shape."""
    key = (type(model).__module__, type(model).__qualname__, repr(model), tuple(input_shape))
    if key not in _CACHE:
        probe = copy.deepcopy(model).train()
        params = next(probe.parameters(), None)
        device = params.device if params is not None else torch.device("cpu")
        dtype = params.dtype if params is not None and params.is_floating_point() else torch.float32
        x = torch.zeros((_BATCH, *input_shape), device=device, dtype=dtype)
        mapping = {_aten.convolution_backward: _conv_backward_flop}
        with FlopCounterMode(display=False, custom_mapping=mapping) as fwd:
            probe(x)
        with FlopCounterMode(display=False, custom_mapping=mapping) as train:
            probe(x).sum().backward()
        _CACHE[key] = (fwd.get_total_flops() / _BATCH, train.get_total_flops() / _BATCH)
    return _CACHE[key]


def forward_flops_per_sample(model: nn.Module, input_shape: tuple[int, int, int]) -> float:
    """Forward-pass FLOPs for one sample.

    Parameters
    ----------
    model : torch.nn.Module
        Not modified (a deep copy is measured).
    input_shape : tuple of int
        One sample's shape (C, H, W).

    Returns
    -------
    float
        FLOPs (1 multiply-add = 2 FLOPs) per sample; see the module docstring for what counts.
    """
    return _count(model, input_shape)[0]


def train_flops_per_sample(model: nn.Module, input_shape: tuple[int, int, int]) -> float:
    """Forward + backward FLOPs for one training sample (optimizer step excluded), with the
    grouped-conv backward corrected; arguments and units as :func:`forward_flops_per_sample`."""
    return _count(model, input_shape)[1]
