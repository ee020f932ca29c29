"""Pre-training of an ENN (Adam, MSE against the true average) on Gaussian samples or given groups.

Schemes (the paper's table): ``freeze_decoder`` trains the encoder against a decoder frozen at
its random initialisation, ``freeze_encoder`` trains the decoder on a frozen random encoder,
``end_to_end`` trains both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedsim.enn.config import EnnConfig
from fedsim.enn.network import EnnNet
from fedsim.rng import seed_for, torch_generator


@dataclass(frozen=True)
class PretrainResult:
    """A trained network and its last-step training loss (MSE, squared value units)."""

    net: EnnNet
    final_loss: float


def gaussian_groups(count: int, config: EnnConfig, generator: torch.Generator) -> torch.Tensor:
    """``count`` groups of N chunks, i.i.d. N(0, ``sample_var``): shape ``(count, N, n)``."""
    std = config.sample_var ** 0.5
    return std * torch.randn(count, config.slots, config.n, generator=generator)


def init_net(config: EnnConfig) -> EnnNet:
    """A freshly initialised network, identical for identical ``config.seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_for(config.seed, "enn", "init"))
        return EnnNet(config)


def train_enn(config: EnnConfig, groups: torch.Tensor | None = None) -> PretrainResult:
    """Pre-train an ENN as ``config`` says; deterministic for a given config and data (on CPU).

    With ``groups`` (shape ``(G, N, n)``, already in the units the codec feeds the encoder),
    step ``s`` uses batch ``s mod (G // batch)`` of a permutation of the groups that is redrawn
    each epoch from its own seeded stream; ``config.samples`` is then ignored. Otherwise the
    Gaussian training set is ``ceil(samples / batch)`` blocks of ``batch`` groups; block ``b`` is
    drawn from its own seeded stream and regenerated when reused, so memory stays at one batch.
    Step ``s`` uses block ``s mod blocks``: with ``samples >= steps * batch`` every step sees
    fresh data, with fewer samples the set is cycled through in epochs.

    Returns
    -------
    PretrainResult
        The trained network (in eval mode, gradients off) and its final training loss.
    """
    net = init_net(config)
    frozen = {"freeze_decoder": net.decoder, "freeze_encoder": net.encoder}.get(config.scheme)
    if frozen is not None:
        frozen.requires_grad_(False)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.lr)
    blocks = -(-config.samples // config.batch) if groups is None else groups.shape[0] // config.batch
    if blocks < 1:
        raise ValueError(f"need at least one batch of {config.batch} groups")
    loss = torch.tensor(float("nan"))
    perm = torch.empty(0, dtype=torch.long)
    for step in range(config.steps):
        if groups is None:
            batch = gaussian_groups(
                config.batch, config, torch_generator(config.seed, "enn", "train", step % blocks)
            )
        else:
            epoch, b = divmod(step, blocks)
            if b == 0:
                perm = torch.randperm(groups.shape[0],
                                      generator=torch_generator(config.seed, "enn", "groups", epoch))
            batch = groups[perm[b * config.batch:(b + 1) * config.batch]]
        loss = torch.nn.functional.mse_loss(net(batch), batch.mean(dim=1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval().requires_grad_(False)
    return PretrainResult(net, loss.item())
