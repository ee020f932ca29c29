"""The ENN: a small FC encoder shared by all clients and a deeper residual decoder on the server.

The decoder takes the concatenation of N clients' codes (in a fixed slot order) and outputs the
**average** of their N chunks directly; no individual chunk is ever reconstructed.
Layer sizes come from :class:`~fedsim.enn.config.EnnConfig` (fedsim's choices, not the paper's).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from fedsim.enn.config import EnnConfig

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU, "identity": nn.Identity,
}


class ResidualBlock(nn.Module):
    """``x + W2 act(W1 x)`` on vectors of ``width`` values (He et al. 2016, FC variant)."""

    def __init__(self, width: int, activation: str):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(width, width), _ACTIVATIONS[activation](), nn.Linear(width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def make_encoder(config: EnnConfig) -> nn.Sequential:
    """FC encoder ``n -> hidden... -> m``: activation after each hidden layer, linear code layer.

    Parameters: ``sum(a*b + b)`` over consecutive widths ``(n, *encoder_hidden, m)``.
    """
    widths = (config.n, *config.encoder_hidden)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), _ACTIVATIONS[config.activation]()]
    layers.append(nn.Linear(widths[-1], config.m))
    return nn.Sequential(*layers)


def make_decoder(config: EnnConfig) -> nn.Sequential:
    """Decoder ``N*m -> width -> residual blocks -> n`` (stem and head with the activation)."""
    act = _ACTIVATIONS[config.activation]
    w = config.decoder_width
    blocks = [ResidualBlock(w, config.activation) for _ in range(config.residual_blocks)]
    return nn.Sequential(
        nn.Linear(config.slots * config.m, w), act(), *blocks, act(), nn.Linear(w, config.n)
    )


class EnnNet(nn.Module):
    """Encoder plus decoder of one ENN.

    Parameters
    ----------
    config : EnnConfig
        Architecture; layers are initialised by PyTorch's default scheme from the global RNG
        (seed it before construction, as :func:`fedsim.enn.pretrain.train_enn` does).
    """

    def __init__(self, config: EnnConfig):
        super().__init__()
        self.config = config
        self.encoder = make_encoder(config)
        self.decoder = make_decoder(config)

    def encode(self, chunks: torch.Tensor) -> torch.Tensor:
        """Codes ``(..., m)`` of chunks ``(..., n)``."""
        return self.encoder(chunks)

    def decode_mean(self, codes: torch.Tensor) -> torch.Tensor:
        """Approximate mean over slots ``(..., n)`` from codes ``(..., N, m)`` in slot order."""
        return self.decoder(codes.flatten(-2))

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        """Decoded average ``(..., n)`` of groups of N chunks ``(..., N, n)``."""
        return self.decode_mean(self.encode(groups))
