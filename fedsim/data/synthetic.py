"""LEAF's ``synthetic(alpha, beta)`` (Li et al., FedProx), generated from a seed for any client count.

Client ``k`` has a model ``W_k ~ N(u_k, 1)`` (60 x 10) and ``b_k ~ N(u_k, 1)`` (10) with
``u_k ~ N(0, alpha)``; its features are ``x ~ N(v_k, Sigma)`` with ``v_k ~ N(B_k, 1)`` (60),
``B_k ~ N(0, beta)`` and ``Sigma = diag(j^-1.2)``, ``j = 1..60``; its labels are
``argmax softmax(W_k^T x + b_k)``. (alpha and beta are standard deviations, as in the published
generator's ``np.random.normal(0, alpha)``.) Its sample count is
``floor(lognormal(mu, sigma)) + min_samples`` (the published generator: mu 4, sigma 2, 50).
Each client's first ``floor(test_fraction * count)`` samples are its held-out test samples
(the published split keeps 10%); the rest are its training samples.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from fedsim.config.registry import DATASETS
from fedsim.data.base import Dataset
from fedsim.rng import numpy_rng

if TYPE_CHECKING:
    from fedsim.config import DataConfig

FEATURES = 60
CLASSES = 10
_BLOCK = 4096  # clients drawn per block: bounds memory, fixed so the draws never depend on it


def sample_counts(num_clients: int, mu: float, sigma: float, min_samples: int,
                  rng: np.random.Generator) -> np.ndarray:
    """Samples per client: ``floor(lognormal(mu, sigma)) + min_samples`` (int64, (num_clients,))."""
    return rng.lognormal(mu, sigma, num_clients).astype(np.int64) + min_samples


def generate(num_clients: int, alpha: float, beta: float, *, rng: np.random.Generator,
             mu: float = 4.0, sigma: float = 2.0, min_samples: int = 50,
             max_samples: int | None = None, test_fraction: float = 0.1) -> Dataset:
    """Draw ``synthetic(alpha, beta)`` for ``num_clients`` clients from ``rng`` alone (the bulk
    normals, W, b and the feature noise, from a torch generator seeded by ``rng``).

    ``max_samples`` (optional) caps each client's sample count after the lognormal draw.
    Returns float32 features (N, 60), int64 labels, and in ``client_parts`` client k's indices
    into the training set (contiguous).
    """
    counts = sample_counts(num_clients, mu, sigma, min_samples, rng)
    if max_samples is not None:
        counts = np.minimum(counts, max_samples)
    u = rng.normal(0.0, alpha, num_clients)
    big_b = rng.normal(0.0, beta, num_clients)
    std = np.arange(1, FEATURES + 1, dtype=np.float64) ** -0.6  # sqrt(j^-1.2)
    n_test = np.floor(test_fraction * counts).astype(np.int64)
    n_train = counts - n_test
    x_tr = np.empty((int(n_train.sum()), FEATURES), np.float32)
    y_tr = np.empty(len(x_tr), np.int64)
    x_te = np.empty((int(n_test.sum()), FEATURES), np.float32)
    y_te = np.empty(len(x_te), np.int64)
    tr_end, te_end = np.cumsum(n_train), np.cumsum(n_test)
    bulk = torch.Generator().manual_seed(int(rng.integers(2**63)))  # torch draws normals faster
    std32 = torch.from_numpy(std).float()
    for lo in range(0, num_clients, _BLOCK):
        hi = min(lo + _BLOCK, num_clients)
        k = hi - lo
        v = torch.from_numpy(rng.normal(big_b[lo:hi, None], 1.0, (k, FEATURES))).float()
        mean = torch.from_numpy(u[lo:hi]).float()
        w = torch.randn((k, FEATURES, CLASSES), generator=bulk).add_(mean[:, None, None])
        b = torch.randn((k, CLASSES), generator=bulk).add_(mean[:, None])
        owner = np.repeat(np.arange(k), counts[lo:hi])
        x = torch.randn((len(owner), FEATURES), generator=bulk).mul_(std32)
        x = x.add_(v[torch.from_numpy(owner)]).numpy()
        first = np.concatenate([[0], np.cumsum(counts[lo:hi])])
        y = _labels(x, w.numpy(), b.numpy(), counts[lo:hi], first)
        is_test = (np.arange(len(owner)) - first[owner]) < n_test[lo:hi][owner]
        tr0 = tr_end[lo - 1] if lo else 0
        te0 = te_end[lo - 1] if lo else 0
        x_tr[tr0:tr_end[hi - 1]], y_tr[tr0:tr_end[hi - 1]] = x[~is_test], y[~is_test]
        x_te[te0:te_end[hi - 1]], y_te[te0:te_end[hi - 1]] = x[is_test], y[is_test]
    starts = np.concatenate([[0], tr_end[:-1]])
    parts = [np.arange(s, e, dtype=np.int64) for s, e in zip(starts, tr_end)]
    return Dataset(name="synthetic", x_train=torch.from_numpy(x_tr), y_train=torch.from_numpy(y_tr),
                   x_test=torch.from_numpy(x_te), y_test=torch.from_numpy(y_te),
                   num_classes=CLASSES, mean=(0.0,), std=(1.0,),
                   source=f"synthetic({alpha}, {beta}) of {num_clients} clients, generated",
                   client_parts=parts)


def _labels(x: np.ndarray, w: np.ndarray, b: np.ndarray, counts: np.ndarray,
            first: np.ndarray) -> np.ndarray:
    """argmax of each sample's logits ``x W_k + b_k`` (= argmax of the softmax) under its client's
    model; clients with equal sample counts are labelled together in one batched matmul."""
    y = np.empty(len(x), np.int64)
    for c in np.unique(counts):
        clients = np.flatnonzero(counts == c)
        rows = first[clients, None] + np.arange(c)  # (clients, c)
        logits = np.matmul(x[rows], w[clients]) + b[clients, None]
        y[rows] = logits.argmax(axis=2)
    return y


def from_config(d: DataConfig, seed: int) -> Dataset:
    """``data.dataset: synthetic``: generated from the run seed with ``data.synthetic``'s settings."""
    s = d.synthetic
    return generate(d.num_clients, s.alpha, s.beta, rng=numpy_rng(seed, "data", "synthetic"),
                    mu=s.mu, sigma=s.sigma, min_samples=s.min_samples,
                    max_samples=s.max_samples, test_fraction=s.test_fraction)


DATASETS.register("synthetic", from_config)
