"""Splitting a training set's sample indices among clients (IID and non-IID schemes)."""

from __future__ import annotations

import numpy as np
import pandas as pd

PARTITION_KINDS: tuple[str, ...] = ("iid", "classes_per_client", "dirichlet", "shards")
_DIRICHLET_MAX_TRIES = 1000


def partition(
    labels: np.ndarray,
    num_clients: int,
    kind: str,
    *,
    rng: np.random.Generator,
    classes_per_client: int | None = None,
    alpha: float | None = None,
    min_samples: int = 1,
    shards_per_client: int = 2,
) -> list[np.ndarray]:
    """Split sample indices ``0..len(labels)-1`` among clients; every index is used exactly once.

    Parameters
    ----------
    labels : np.ndarray
        Integer class labels, shape (N,).
    num_clients : int
        Number of clients (1 ≤ num_clients ≤ N).
    kind : str
        ``"iid"``: shuffle, then near-equal contiguous chunks (sizes differ by at most 1).
        ``"classes_per_client"``: with the classes present in ``labels`` in a random order
        ``c_0..c_{C-1}``, client ``i`` holds ``c_{(i*k + j) mod C}`` for ``j < k``; each class's
        shuffled samples are split into near-equal shards among the clients holding it. With
        ``num_clients * k == C`` the clients get disjoint classes (e.g. 2 clients × 5 classes);
        with 100 clients × 3 classes of 10, each class is shared by 30 clients. Requires
        ``num_clients * k >= C`` so every sample is used.
        ``"dirichlet"``: per class, proportions ~ Dirichlet(alpha · 1) over clients; the whole
        draw is repeated until every client has at least ``min_samples`` samples.
        ``"shards"`` (McMahan et al.): shuffle, sort by label (stable), cut into
        ``num_clients * shards_per_client`` near-equal shards and give each client
        ``shards_per_client`` shards drawn at random.
    rng : np.random.Generator
        The only source of randomness; the same generator state gives the same partition.
    classes_per_client : int or None
        ``k`` for ``"classes_per_client"`` (1 ≤ k ≤ C).
    alpha : float or None
        Concentration (> 0) for ``"dirichlet"``; small alpha is more skewed.
    min_samples : int
        Minimum samples per client for ``"dirichlet"``.
    shards_per_client : int
        Shards per client for ``"shards"`` (McMahan et al. use 2).

    Returns
    -------
    list of np.ndarray
        ``num_clients`` sorted int64 index arrays.

    Raises
    ------
    ValueError
        Unknown kind, missing/invalid option, or an impossible request.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be a 1-D integer array, got dtype {labels.dtype} shape {labels.shape}"
        )
    n = len(labels)
    if not 1 <= num_clients <= n:
        raise ValueError(
            f"num_clients must be between 1 and the number of samples ({n}), got {num_clients}"
        )
    if kind == "iid":
        parts = np.array_split(rng.permutation(n), num_clients)
    elif kind == "classes_per_client":
        parts = _by_classes(labels, num_clients, classes_per_client, rng)
    elif kind == "dirichlet":
        parts = _dirichlet(labels, num_clients, alpha, min_samples, rng)
    elif kind == "shards":
        parts = _shards(labels, num_clients, shards_per_client, rng)
    else:
        raise ValueError(
            f"unknown partition kind {kind!r}; valid choices: {', '.join(PARTITION_KINDS)}"
        )
    return [np.sort(p).astype(np.int64) for p in parts]


def _by_classes(
    labels: np.ndarray, num_clients: int, k: int | None, rng: np.random.Generator
) -> list[np.ndarray]:
    classes = np.unique(labels)
    n_cls = len(classes)
    if k is None or not 1 <= k <= n_cls:
        raise ValueError(
            f"classes_per_client must be between 1 and the number of classes ({n_cls}), got {k}"
        )
    if num_clients * k < n_cls:
        raise ValueError(
            f"classes_per_client: {num_clients} clients × {k} classes cover fewer than the "
            f"{n_cls} classes, "
            "so some samples would be unused; raise num_clients or classes_per_client"
        )
    order = classes[rng.permutation(n_cls)]
    holders: dict[int, list[int]] = {int(c): [] for c in classes}
    for i in range(num_clients):
        for j in range(k):
            holders[int(order[(i * k + j) % n_cls])].append(i)
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c in classes:
        idx = rng.permutation(np.flatnonzero(labels == c))
        owners = holders[int(c)]
        if len(idx) < len(owners):
            raise ValueError(
                f"classes_per_client: class {c} has {len(idx)} samples "
                f"but {len(owners)} clients hold it"
            )
        for owner, shard in zip(owners, np.array_split(idx, len(owners))):
            parts[owner].append(shard)
    return [np.concatenate(p) for p in parts]


def _shards(labels: np.ndarray, num_clients: int, per_client: int,
            rng: np.random.Generator) -> list[np.ndarray]:
    n_shards = num_clients * per_client
    if per_client < 1 or n_shards > len(labels):
        raise ValueError(f"shards: {num_clients} clients × {per_client} shards need at least "
                         f"{n_shards} samples, have {len(labels)}")
    shuffled = rng.permutation(len(labels))
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    shards = np.array_split(by_label, n_shards)
    owner = rng.permutation(n_shards).reshape(num_clients, per_client)
    return [np.concatenate([shards[s] for s in row]) for row in owner]


def _dirichlet(
    labels: np.ndarray,
    num_clients: int,
    alpha: float | None,
    min_samples: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    if alpha is None or not alpha > 0:
        raise ValueError(f"dirichlet partition needs alpha > 0, got {alpha}")
    if min_samples < 0 or num_clients * min_samples > len(labels):
        raise ValueError(
            f"dirichlet: {num_clients} clients × min_samples {min_samples} is impossible "
            f"with {len(labels)} samples"
        )
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(_DIRICHLET_MAX_TRIES):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for idx in by_class:
            idx = rng.permutation(idx)
            cuts = (np.cumsum(rng.dirichlet(np.full(num_clients, alpha)))[:-1] * len(idx)).astype(
                int
            )
            for owner, shard in enumerate(np.split(idx, cuts)):
                parts[owner].append(shard)
        merged = [np.concatenate(p) for p in parts]
        if min(len(p) for p in merged) >= min_samples:
            return merged
    raise ValueError(
        f"dirichlet: no draw in {_DIRICHLET_MAX_TRIES} tries gave every one of "
        f"{num_clients} clients "
        f"≥ {min_samples} samples with alpha {alpha}; raise alpha or lower min_samples"
    )


def class_histogram(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> pd.DataFrame:
    """Samples per (client, class), long format, zero counts included.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels (N,) in ``[0, num_classes)``.
    parts : list of np.ndarray
        Index arrays, one per client (as returned by :func:`partition`).
    num_classes : int
        Number of classes.

    Returns
    -------
    pandas.DataFrame
        Columns ``client``, ``class``, ``count`` (int64); ``len(parts) * num_classes`` rows.
    """
    labels = np.asarray(labels)
    rows = [np.bincount(labels[p], minlength=num_classes)[:num_classes] for p in parts]
    counts = np.array(rows, dtype=np.int64).reshape(len(parts), num_classes)
    return pd.DataFrame(
        {
            "client": np.repeat(np.arange(len(parts)), num_classes),
            "class": np.tile(np.arange(num_classes), len(parts)),
            "count": counts.ravel(),
        }
    )
