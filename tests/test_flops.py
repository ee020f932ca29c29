"""FLOP counts: LeNet-5 against a hand count, the grouped-conv backward correction, MobileNetV2."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fedsim.flops import forward_flops_per_sample, train_flops_per_sample
from fedsim.models import build_model

torch.set_num_threads(1)


def _conv(c_in, c_out, k, h_out, groups=1):
    """Forward FLOPs of one conv per sample: 2 · k² · C_out · H_out² · C_in/groups."""
    return 2 * k * k * c_out * h_out * h_out * (c_in // groups)


def _linear(n_in, n_out):
    return 2 * n_in * n_out


def test_lenet5_matches_hand_count():
    model = build_model("lenet5")
    convs = [_conv(1, 6, 5, 28), _conv(6, 16, 5, 10)]
    fcs = [_linear(400, 120), _linear(120, 84), _linear(84, 10)]
    assert forward_flops_per_sample(model, (1, 28, 28)) == sum(convs) + sum(fcs) == 833_040
    # training: grad weight for every layer, grad input for all but the first (input needs no grad)
    assert (
        train_flops_per_sample(model, (1, 28, 28))
        == 2 * convs[0] + 3 * convs[1] + 3 * sum(fcs)
        == 2_263_920
    )


def test_depthwise_conv_backward_corrected():
    shape = (8, 16, 16)
    pointwise = nn.Conv2d(8, 96, 1, bias=False)
    depthwise = nn.Conv2d(96, 96, 3, padding=1, groups=96, bias=False)
    both = nn.Sequential(pointwise, depthwise)  # so the depthwise layer's input needs a gradient
    fwd = forward_flops_per_sample(both, shape) - forward_flops_per_sample(pointwise, shape)
    train = train_flops_per_sample(both, shape) - train_flops_per_sample(pointwise, shape)
    assert fwd == _conv(96, 96, 3, 16, groups=96)
    assert train == 3 * fwd


def test_stock_counter_still_overcounts_depthwise_backward():
    """Documents why the correction exists; if this fails, torch fixed its formula."""
    depthwise = nn.Conv2d(96, 96, 3, padding=1, groups=96, bias=False)
    x = torch.randn(2, 96, 16, 16, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        depthwise(x).sum().backward()
    forward = 2 * _conv(96, 96, 3, 16, groups=96)
    assert counter.get_total_flops() / forward > 50


def test_mobilenet_v2_ratio_and_cache():
    model = build_model("mobilenet_v2", in_channels=3, image_size=32)
    fwd = forward_flops_per_sample(model, (3, 32, 32))
    train = train_flops_per_sample(model, (3, 32, 32))
    assert 2.5 < train / fwd < 3.5
    assert 1e8 < fwd < 3e8
    assert all(p.grad is None for p in model.parameters())  # the caller's model is untouched
    assert (
        forward_flops_per_sample(
            build_model("mobilenet_v2", in_channels=3, image_size=32), (3, 32, 32)
        )
        == fwd
    )
    assert forward_flops_per_sample(model, (3, 64, 64)) > 3.5 * fwd
