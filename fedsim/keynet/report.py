"""Size reports: plaintext vs ciphertext values, bytes and nnz per layer.

``python -m fedsim.keynet.report`` prints the per-layer lowered nnz of LeNet-5 (pad 2, fc 400,
avg pooling) and of the CIFAR MobileNetV2 (width 1.0), plus LeNet-5 ciphertext sizes for
block keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fedsim.keynet.lowering import LOWERABLE, lowered_nnz

FLOAT_BYTES = 4  # wire values are float32


@dataclass(frozen=True)
class LayerSize:
    """One row of a size report.

    Attributes
    ----------
    name : str
        Module path (or segment name: ``rest``, a state entry).
    kind : str
        Module type or segment kind.
    plain : int
        Plaintext parameters carried.
    nnz : int
        Ciphertext values (for :func:`nnz_table`: nnz of the lowered matrix, which equals the
        ciphertext nnz under α = 1 keys).
    """

    name: str
    kind: str
    plain: int
    nnz: int

    @property
    def plain_bytes(self) -> int:
        """Plaintext size on the wire in bytes (float32)."""
        return FLOAT_BYTES * self.plain

    @property
    def cipher_bytes(self) -> int:
        """Ciphertext size on the wire in bytes (float32 values; the layout is key-derived)."""
        return FLOAT_BYTES * self.nnz


def size_table(domain) -> list[LayerSize]:
    """Per-segment plaintext / ciphertext sizes of a :class:`~fedsim.keynet.domain.KeyNetDomain`."""
    return [LayerSize(s.name, s.kind, s.plain, s.nnz) for s in domain.segments]


def nnz_table(model: nn.Module, input_shape: tuple[int, ...]) -> list[LayerSize]:
    """Per-layer nnz of every lowerable layer as called in ``model``'s forward pass.

    Counted from layer geometry (no matrices built), so it works for large models. Includes
    each layer's bias column and homogeneous 1.
    """
    rows: list[LayerSize] = []
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, LOWERABLE):
            def hook(mod, args, name=name):
                shape = tuple(args[0].shape[1:])
                plain = sum(p.numel() for p in mod.parameters(recurse=False))
                rows.append(LayerSize(name, type(mod).__name__, plain, lowered_nnz(mod, shape)))
            hooks.append(m.register_forward_pre_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return rows


def format_table(rows: list[LayerSize], title: str) -> str:
    """Plain-text table with a total line."""
    lines = [title, f"{'layer':<28}{'type':<20}{'plain':>12}{'nnz':>14}{'ratio':>9}"]
    for r in rows:
        ratio = f"{r.nnz / r.plain:.1f}" if r.plain else "-"
        lines.append(f"{r.name:<28}{r.kind:<20}{r.plain:>12,}{r.nnz:>14,}{ratio:>9}")
    plain, nnz = sum(r.plain for r in rows), sum(r.nnz for r in rows)
    lines.append(f"{'total':<48}{plain:>12,}{nnz:>14,}{nnz / max(plain, 1):>9.1f}")
    return "\n".join(lines)


def main() -> None:
    """Print the nnz tables of LeNet-5 and MobileNetV2-CIFAR and LeNet-5 block-key sizes."""
    from fedsim.keynet.domain import KeyNetDomain
    from fedsim.models import build_model

    torch.manual_seed(0)
    lenet = build_model("lenet5", pooling="avg")
    print(format_table(nnz_table(lenet, (1, 28, 28)), "LeNet-5 (28x28, pad 2, fc 400, avg pool)"))
    mnv2 = build_model("mobilenet_v2", in_channels=3, image_size=32)
    print()
    print(format_table(nnz_table(mnv2, (3, 32, 32)), "MobileNetV2-CIFAR (32x32, width 1.0)"))
    for alpha in (2, 4):
        dom = KeyNetDomain.from_seed(lenet, (1, 28, 28), seed=0, alpha=alpha)
        print()
        print(format_table(size_table(dom), f"LeNet-5 ciphertext, alpha={alpha} at input/pooling"))


if __name__ == "__main__":
    main()
