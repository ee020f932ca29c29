"""Model zoo (layer 1, pure PyTorch): LeNet-5, a CIFAR MobileNetV2, a small CNN, DLG's LeNet, an MLP.

Parameter counts (10 classes): ``lenet5`` 61,706 (1×28×28); ``small_cnn`` 421,642 (1×28×28) and
545,098 (3×32×32); ``lenet_dlg`` 13,426 (1×28×28) and 15,826 (3×32×32); ``mobilenet_v2``
2,236,682 (3×32×32, width_mult 1.0); ``mlp`` 4,270 (60 features, hidden 60: 61·60 + 61·10)
and 79,510 (1×28×28, hidden 100).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torchvision.models import mobilenet_v2

from fedsim.config.registry import MODELS

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
_POOLINGS: dict[str, type[nn.Module]] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}

# torchvision's MobileNetV2 stages (expansion t, channels c, repeats n, first stride s), with the
# second stage's stride changed from 2 to 1 for 32×32 inputs.
_CIFAR_MOBILENET_V2_SETTING = [
    [1, 16, 1, 1],
    [6, 24, 2, 1],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


def _choice(table: dict[str, type[nn.Module]], value: str, what: str) -> type[nn.Module]:
    if value not in table:
        raise ValueError(f"unknown {what} {value!r}; valid choices: {', '.join(table)}")
    return table[value]


def _lenet5(
    num_classes: int, in_channels: int, size: int, act: type[nn.Module], pool: type[nn.Module]
) -> nn.Module:
    side = (size // 2 - 4) // 2
    if side < 1:
        raise ValueError(f"lenet5 needs image_size >= 12, got {size}")
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2),
        act(),
        pool(2),
        nn.Conv2d(6, 16, 5),
        act(),
        pool(2),
        nn.Flatten(),
        nn.Linear(16 * side * side, 120),
        act(),
        nn.Linear(120, 84),
        act(),
        nn.Linear(84, num_classes),
    )


def _small_cnn(
    num_classes: int, in_channels: int, size: int, act: type[nn.Module], pool: type[nn.Module]
) -> nn.Module:
    side = size // 4
    if side < 1:
        raise ValueError(f"small_cnn needs image_size >= 4, got {size}")
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1),
        act(),
        pool(2),
        nn.Conv2d(32, 64, 3, padding=1),
        act(),
        pool(2),
        nn.Flatten(),
        nn.Linear(64 * side * side, 128),
        act(),
        nn.Linear(128, num_classes),
    )


def _lenet_dlg(num_classes: int, in_channels: int, size: int) -> nn.Module:
    side = (size + 3) // 4  # two stride-2 convs with kernel 5, padding 2: ceil(size / 4)
    return nn.Sequential(
        nn.Conv2d(in_channels, 12, 5, padding=2, stride=2),
        nn.Sigmoid(),
        nn.Conv2d(12, 12, 5, padding=2, stride=2),
        nn.Sigmoid(),
        nn.Conv2d(12, 12, 5, padding=2, stride=1),
        nn.Sigmoid(),
        nn.Flatten(),
        nn.Linear(12 * side * side, num_classes),
    )


def _mlp(num_classes: int, in_features: int, hidden: int, act: type[nn.Module]) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), act(),
                         nn.Linear(hidden, num_classes))


def _mobilenet_v2_cifar(num_classes: int, in_channels: int, width_mult: float) -> nn.Module:
    model = mobilenet_v2(
        num_classes=num_classes,
        width_mult=width_mult,
        inverted_residual_setting=_CIFAR_MOBILENET_V2_SETTING,
    )
    first = model.features[0][0]
    model.features[0][0] = nn.Conv2d(
        in_channels, first.out_channels, 3, stride=1, padding=1, bias=False
    )
    return model


def build_model(
    kind: str,
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    pooling: str = "max",
    activation: str = "relu",
    width_mult: float = 1.0,
    in_features: int | None = None,
    hidden: int = 60,
) -> nn.Module:
    """Build a freshly initialized classifier (PyTorch default init; seed torch beforehand).

    Parameters
    ----------
    kind : str
        ``"lenet5"``: flat ``nn.Sequential`` (Conv2d 5×5 pad 2 → 6, act, pool 2, Conv2d 5×5 → 16,
        act, pool 2, Flatten, Linear 400→120, act, Linear 120→84, act, Linear 84→classes);
        the Linear input is 16·⌊(⌊s/2⌋−4)/2⌋² for image size s (400 at 28).
        ``"mobilenet_v2"``: torchvision's ``mobilenet_v2(num_classes, width_mult)`` adapted to
        32×32 inputs exactly as follows: the stem conv is 3×3 with stride 1 (was 2) and takes
        ``in_channels`` inputs, and the second inverted-residual stage (t=6, c=24, n=2) has
        stride 1 (was 2); everything else (BatchNorm, ReLU6, Dropout 0.2 classifier) is
        torchvision's. Total downsampling is 8×, so 32×32 ends at 4×4 before global pooling.
        ``"small_cnn"``: flat ``nn.Sequential`` (Conv2d 3×3 pad 1 → 32, act, pool 2, Conv2d 3×3
        pad 1 → 64, act, pool 2, Flatten, Linear 64·⌊s/4⌋² → 128, act, Linear 128 → classes);
        421,642 parameters for 1×28×28 and 545,098 for 3×32×32 with 10 classes.
        ``"lenet_dlg"``: the sigmoid LeNet of the gradient-inversion references (DLG): three
        Conv2d(→12, 5×5, padding 2) with strides 2, 2, 1, each followed by Sigmoid, then
        Flatten and Linear(12·⌈s/4⌉², classes) (588 inputs at 28, 768 at 32). Always sigmoid.
        ``"mlp"``: Flatten, Linear(in_features → hidden), act, Linear(hidden → classes):
        ``(in_features + 1)·hidden + (hidden + 1)·classes`` parameters (4,270 for
        synthetic's 60 features, hidden 60, 10 classes).
    num_classes : int
        Output logits.
    in_channels : int
        Input image channels.
    image_size : int
        Input height = width in pixels (mobilenet_v2 accepts any size via global pooling).
    pooling : str
        ``"max"`` or ``"avg"``; used by lenet5 and small_cnn (KeyNet needs ``"avg"``).
    activation : str
        ``"relu"``, ``"sigmoid"`` or ``"tanh"``; used by lenet5, small_cnn and mlp (mobilenet_v2 keeps
        ReLU6, lenet_dlg keeps Sigmoid). Validated for every kind.
    width_mult : float
        Channel multiplier; only mobilenet_v2 supports values other than 1.0.
    in_features : int or None
        Input features of ``mlp`` (default ``in_channels · image_size²``).
    hidden : int
        Hidden width of ``mlp``.

    Returns
    -------
    torch.nn.Module
        The model in training mode.

    Raises
    ------
    ValueError
        Unknown kind or option; option values the kind cannot honour.
    """
    act = _choice(_ACTIVATIONS, activation, "activation")
    pool = _choice(_POOLINGS, pooling, "pooling")
    if num_classes < 1 or in_channels < 1 or image_size < 1:
        raise ValueError(
            "num_classes, in_channels and image_size must be positive, "
            f"got {num_classes}, {in_channels}, {image_size}"
        )
    if kind not in MODELS:
        raise ValueError(f"unknown model kind {kind!r}; valid choices: {', '.join(MODELS.kinds())}")
    if kind != "mobilenet_v2" and width_mult != 1.0:
        raise ValueError(
            f"width_mult is only supported by mobilenet_v2, got {width_mult} for {kind!r}"
        )
    return MODELS.factory(kind)(ModelArgs(num_classes, in_channels, image_size,
                                          in_features or in_channels * image_size**2, act, pool,
                                          width_mult, hidden))


@dataclass(frozen=True)
class ModelArgs:
    """What a model factory (``MODELS``) gets: output classes, input channels, image side
    (pixels), flat input features, activation and pooling classes, width multiplier and the
    hidden width (``model.hidden``)."""

    num_classes: int
    in_channels: int
    image_size: int
    in_features: int
    act: type[nn.Module]
    pool: type[nn.Module]
    width_mult: float
    hidden: int


def _mlp_model(a: ModelArgs) -> nn.Module:
    if a.hidden < 1:
        raise ValueError(f"mlp hidden width must be positive, got {a.hidden}")
    return _mlp(a.num_classes, a.in_features, a.hidden, a.act)


def _mobilenet_model(a: ModelArgs) -> nn.Module:
    if a.width_mult <= 0:
        raise ValueError(f"width_mult must be positive, got {a.width_mult}")
    return _mobilenet_v2_cifar(a.num_classes, a.in_channels, a.width_mult)


MODELS.register("lenet5", lambda a: _lenet5(a.num_classes, a.in_channels, a.image_size, a.act, a.pool))
MODELS.register("mobilenet_v2", _mobilenet_model)
MODELS.register("small_cnn",
                lambda a: _small_cnn(a.num_classes, a.in_channels, a.image_size, a.act, a.pool))
MODELS.register("lenet_dlg", lambda a: _lenet_dlg(a.num_classes, a.in_channels, a.image_size))
MODELS.register("mlp", _mlp_model)
#: The built-in model kinds (``MODELS.kinds()`` also lists registered plug-ins).
MODEL_KINDS: tuple[str, ...] = MODELS.kinds()
