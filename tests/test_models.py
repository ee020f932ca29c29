"""Model zoo: output shapes, parameter counts, LeNet-5's flat layout, the CIFAR MobileNetV2."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedsim.models import MODEL_KINDS, build_model

torch.set_num_threads(1)


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("kind", MODEL_KINDS)
@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32)])
def test_output_shape(kind, channels, size):
    torch.manual_seed(0)
    model = build_model(kind, num_classes=7, in_channels=channels, image_size=size)
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_mlp_on_features_and_images():
    """(in + 1) * hidden + (hidden + 1) * classes parameters; images are flattened."""
    model = build_model("mlp", in_features=60)
    assert _params(model) == 61 * 60 + 61 * 10 == 4270
    assert model(torch.randn(3, 60)).shape == (3, 10)
    assert _params(build_model("mlp", hidden=100)) == 785 * 100 + 101 * 10
    with pytest.raises(ValueError, match="hidden width must be positive"):
        build_model("mlp", hidden=0)


def test_lenet5_param_count_and_flat_layout():
    model = build_model("lenet5", pooling="avg", activation="tanh")
    assert _params(model) == 61706
    assert isinstance(model, nn.Sequential)
    expected = [
        nn.Conv2d,
        nn.Tanh,
        nn.AvgPool2d,
        nn.Conv2d,
        nn.Tanh,
        nn.AvgPool2d,
        nn.Flatten,
        nn.Linear,
        nn.Tanh,
        nn.Linear,
        nn.Tanh,
        nn.Linear,
    ]
    assert [type(m) for m in model] == expected
    assert model[7].in_features == 400 and model[0].padding == (2, 2)
    assert (
        type(build_model("lenet5")[2]) is nn.MaxPool2d and type(build_model("lenet5")[1]) is nn.ReLU
    )


def test_small_cnn_param_counts():
    assert _params(build_model("small_cnn")) == 421642
    assert _params(build_model("small_cnn", in_channels=3, image_size=32)) == 545098


@pytest.mark.parametrize("channels, size, fc_in", [(1, 28, 588), (3, 32, 768)])
def test_lenet_dlg_layout(channels, size, fc_in):
    model = build_model("lenet_dlg", in_channels=channels, image_size=size)
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2), (2, 2), (1, 1)] and all(
        c.out_channels == 12 for c in convs
    )
    assert sum(isinstance(m, nn.Sigmoid) for m in model) == 3
    assert model[-1].in_features == fc_in


def test_mobilenet_v2_cifar_adaptation():
    model = build_model("mobilenet_v2", num_classes=10, in_channels=3, image_size=32)
    assert model.features[0][0].stride == (1, 1)
    strides = [
        m.stride
        for m in model.features.modules()
        if isinstance(m, nn.Conv2d) and m.stride != (1, 1)
    ]
    assert strides == [(2, 2)] * 3  # 32x32 -> 4x4: only stages 3, 4 and 6 downsample
    assert _params(model) == 2236682
    model.eval()
    with torch.no_grad():
        feats = model.features(torch.randn(1, 3, 32, 32))
    assert feats.shape[-2:] == (4, 4)
    half = build_model("mobilenet_v2", in_channels=3, image_size=32, width_mult=0.5)
    assert _params(half) < _params(model)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "resnet18"}, "valid choices: lenet5, mobilenet_v2, small_cnn, lenet_dlg"),
        ({"kind": "lenet5", "pooling": "lp"}, "valid choices: max, avg"),
        ({"kind": "lenet5", "activation": "gelu"}, "valid choices: relu, sigmoid, tanh"),
        ({"kind": "lenet5", "width_mult": 0.5}, "only supported by mobilenet_v2"),
        ({"kind": "lenet5", "image_size": 8}, "image_size >= 12"),
        ({"kind": "mobilenet_v2", "width_mult": 0.0}, "width_mult must be positive"),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model(**kwargs)
