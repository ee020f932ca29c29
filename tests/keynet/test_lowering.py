"""Lowering matches PyTorch's ops, has the documented nnz, and reads back its parameters."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from keynet_nets import LENET_INPUT, make_lenet
from torch import nn

from fedsim.keynet.lowering import (
    lower_adaptive_avgpool2d,
    lower_avgpool2d,
    lower_conv2d,
    lower_linear,
    lowered_nnz,
)
from fedsim.keynet.report import nnz_table


def _apply(low, theta: np.ndarray, x: torch.Tensor) -> np.ndarray:
    """Lowered matrix (float32) applied to [vec(x); 1] for a batch."""
    flat = x.reshape(x.shape[0], -1).numpy()
    xt = np.concatenate([flat, np.ones((flat.shape[0], 1), np.float32)], axis=1)
    return (low.matrix(theta).astype(np.float32) @ xt.T).T


def _theta(*tensors) -> np.ndarray:
    return np.concatenate([t.detach().double().numpy().ravel() for t in tensors if t is not None])


@pytest.mark.parametrize("k,s,pad,size,depthwise",
                         itertools.product([1, 3, 5], [1, 2], ["zero", "half"], [7, 8],
                                           [False, True]))
def test_conv2d_matches_torch(k, s, pad, size, depthwise):
    torch.manual_seed(k * 100 + s * 10 + size)
    c = 3
    p = 0 if pad == "zero" else k // 2
    conv = nn.Conv2d(c, c if depthwise else 5, k, s, p, groups=c if depthwise else 1)
    x = torch.randn(4, c, size, size + 1)
    ref = F.conv2d(x, conv.weight, conv.bias, s, p, groups=conv.groups).detach()
    low = lower_conv2d(conv, (c, size, size + 1), 0, conv.weight.numel())
    assert low.out_shape == tuple(ref.shape[1:])
    y = _apply(low, _theta(conv.weight, conv.bias), x)
    np.testing.assert_allclose(y[:, :-1], ref.reshape(4, -1).numpy(), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(y[:, -1], 1.0)
    assert low.nnz == lowered_nnz(conv, (c, size, size + 1))


def test_conv2d_without_bias_and_dilation():
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(2, 1), bias=False)
    x = torch.randn(2, 2, 9, 6)
    low = lower_conv2d(conv, (2, 9, 6), 0, None)
    y = _apply(low, _theta(conv.weight), x)
    np.testing.assert_allclose(y[:, :-1], conv(x).detach().reshape(2, -1).numpy(), atol=1e-5)


def test_linear_matches_torch():
    torch.manual_seed(2)
    lin = nn.Linear(37, 11)
    x = torch.randn(5, 37)
    low = lower_linear(lin, 0, lin.weight.numel())
    y = _apply(low, _theta(lin.weight, lin.bias), x)
    np.testing.assert_allclose(y[:, :-1], F.linear(x, lin.weight, lin.bias).detach().numpy(),
                               atol=1e-5)
    assert low.nnz == 37 * 11 + 11 + 1


@pytest.mark.parametrize("k,s,p,ceil,include",
                         [(2, 2, 0, False, True), (3, 2, 1, False, True), (3, 2, 1, True, True),
                          (3, 2, 1, False, False), (3, 1, 1, True, False), (2, 2, 1, True, True),
                          (3, 3, 0, True, True)])
@pytest.mark.parametrize("size", [7, 8])
def test_avgpool_matches_torch(k, s, p, ceil, include, size):
    pool = nn.AvgPool2d(k, s, p, ceil_mode=ceil, count_include_pad=include)
    x = torch.randn(3, 4, size, size + 1)
    ref = pool(x)
    low = lower_avgpool2d(pool, (4, size, size + 1))
    assert low.out_shape == tuple(ref.shape[1:])
    y = _apply(low, np.zeros(0), x)
    np.testing.assert_allclose(y[:, :-1], ref.reshape(3, -1).numpy(), atol=1e-5)


@pytest.mark.parametrize("out", [1, 2, 3])
def test_adaptive_avgpool_matches_torch(out):
    pool = nn.AdaptiveAvgPool2d(out)
    x = torch.randn(2, 3, 7, 8)
    y = _apply(lower_adaptive_avgpool2d(pool, (3, 7, 8)), np.zeros(0), x)
    np.testing.assert_allclose(y[:, :-1], pool(x).reshape(2, -1).numpy(), atol=1e-5)


def test_read_params_inverts_lowering():
    torch.manual_seed(3)
    conv = nn.Conv2d(4, 4, 3, 2, 1, groups=2)
    theta = _theta(conv.weight, conv.bias)
    theta[:5] = 0.0  # exact zeros keep their slots
    low = lower_conv2d(conv, (4, 7, 7), 0, conv.weight.numel())
    idx, vals = low.read_params(low.matrix(theta), theta.size)
    np.testing.assert_array_equal(idx, np.arange(theta.size))
    np.testing.assert_array_equal(vals, theta)


def test_unreachable_taps_are_not_read():
    conv = nn.Conv2d(1, 1, 5, padding=2)
    low = lower_conv2d(conv, (1, 1, 1), 0, 25)  # 1×1 input: only the centre tap is used
    pos = low.first_positions(26)
    assert (pos >= 0).sum() == 2  # centre weight and bias


def test_lenet5_nnz_matches_brief():
    rows = nnz_table(make_lenet(), LENET_INPUT)
    assert [r.nnz for r in rows] == [112441, 4705, 241601, 1601, 48121, 10165, 851]


def test_repo_lenet_avgpool_nnz_matches_brief():
    net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.AvgPool2d(3, 2, 1),
                        nn.Conv2d(6, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(3, 2, 1),
                        nn.Flatten(), nn.Linear(784, 120), nn.ReLU(), nn.Linear(120, 84),
                        nn.ReLU(), nn.Linear(84, 10))
    rows = nnz_table(net, LENET_INPUT)
    assert [r.nnz for r in rows] == [45049, 10087, 156737, 6401, 94201, 10165, 851]
