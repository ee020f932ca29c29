"""Measurements of an ENN: approximation error on Gaussian data and fidelity on real updates.

Reference points for the test MSE (per coordinate, squared value units), with per-value
variance ``v`` (``sample_var``), N slots and code ratio m/n:

* always-zero decoder: ``v / N`` (the variance of the true average);
* best linear code: ``(1 - m/n) v / N``. For i.i.d. isotropic Gaussian chunks a linear encoder
  keeps at most m of the n equal-variance directions of each client's chunk (PCA), and the
  clients are independent, so the unrecoverable part of the average has this variance.
"""

from __future__ import annotations

import torch

from fedsim.enn.network import EnnNet
from fedsim.enn.pretrain import gaussian_groups
from fedsim.rng import torch_generator


def zero_baseline_mse(sample_var: float, slots: int) -> float:
    """MSE of a decoder that always outputs zero: ``sample_var / slots``."""
    return sample_var / slots


def linear_bound_mse(n: int, m: int, sample_var: float, slots: int) -> float:
    """Lowest MSE any linear code of m values per chunk of n reaches: ``(1 - m/n) v / N``."""
    return (1.0 - m / n) * sample_var / slots


@torch.no_grad()
def approximation_mse(net: EnnNet, groups: int = 10_000, seed: int = 12345, batch: int = 2_000) -> float:
    """Test MSE of ``net``'s decoded average on fresh Gaussian groups.

    Parameters
    ----------
    net : EnnNet
        Trained network; its config gives n, N and the sample variance.
    groups : int
        Held-out groups of N chunks (drawn from a stream separate from training data).
    seed : int
        Seed of the held-out stream.
    batch : int
        Groups evaluated at once (memory only).
    """
    gen = torch_generator(seed, "enn", "test")
    total, count = 0.0, 0
    for start in range(0, groups, batch):
        x = gaussian_groups(min(batch, groups - start), net.config, gen)
        total += float(((net(x) - x.mean(dim=1)) ** 2).sum())
        count += x.shape[0] * net.config.n
    return total / count


def average_fidelity(decoded: torch.Tensor, true_mean: torch.Tensor) -> dict[str, float]:
    """Cosine similarity and relative L2 error ``||d - t|| / ||t||`` of a decoded average."""
    d, t = decoded.double().reshape(-1), true_mean.double().reshape(-1)
    cos = float(torch.nn.functional.cosine_similarity(d, t, dim=0))
    rel = float((d - t).norm() / t.norm().clamp_min(1e-300))
    return {"cosine": cos, "rel_error": rel}
