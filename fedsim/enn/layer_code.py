"""Layer-aligned linear codes: one code per weight matrix, learned from update statistics.

A weight entry of shape ``(a, ...)`` is viewed as a matrix ``M`` of ``a`` rows; its chunks are
the matrix's columns (one input feature's weights across the ``a`` outputs). The code of the
layer is a linear autoencoder ``c = U^T M`` (``r x cols`` values), ``M^ = U c``, with ``U`` an
``a x r`` matrix of orthonormal columns, ``r = max(1, a // ratio)``. Trained to least squares on
sample matrices, a linear autoencoder learns their top ``r`` principal directions (Baldi & Hornik
1989), so the fit here is its closed form: the top ``r`` left singular vectors of the samples.

Entries with fewer than two dimensions (biases) are not coded (sent as they are), nor are
matrices with fewer than ``min_rows`` rows (default :data:`MIN_ROWS`; an output layer of 10
classes: its update spans all of its rows, and it often holds a large share of the update's
energy) or whose code would save less than :data:`MIN_SAVING` of the update's values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

#: A matrix is coded only if it has at least this many rows (the default of ``min_rows``) ...
MIN_ROWS = 16
#: ... and its code saves at least this fraction of the update's values.
MIN_SAVING = 0.01


def code_rank(rows: int, ratio: int) -> int:
    """Code rows ``r`` of a matrix entry with ``rows`` rows at compression ``ratio``."""
    return max(1, rows // ratio)


def coded_entries(shapes: Sequence[tuple[int, ...]], ratio: int,
                  min_rows: int = MIN_ROWS) -> list[bool]:
    """Which entries get a code: matrices of at least ``min_rows`` rows whose code saves at least
    ``MIN_SAVING`` of all values."""
    total = sum(math.prod(s) for s in shapes)
    out = []
    for shape in shapes:
        n = math.prod(shape)
        saved = (n - code_rank(shape[0], ratio) * (n // shape[0])
                 if len(shape) >= 2 and shape[0] >= min_rows else 0)
        out.append(saved > 0 and saved >= MIN_SAVING * total)
    return out


def layer_views(flat: torch.Tensor, shapes: Sequence[tuple[int, ...]]) -> list[torch.Tensor]:
    """The entries of a flat vector (state-dict order): ``(a, cols)`` matrices for entries of two
    or more dimensions, 1-D views for the others."""
    out, at = [], 0
    for shape in shapes:
        n = math.prod(shape)
        part = flat[at:at + n]
        out.append(part.view(shape[0], -1) if len(shape) >= 2 else part)
        at += n
    if at != flat.numel():
        raise ValueError(f"vector has {flat.numel()} values, the layer shapes {at}")
    return out


def fit_bases(samples: torch.Tensor, shapes: Sequence[tuple[int, ...]], ratio: int,
              previous: torch.Tensor | None = None,
              min_rows: int = MIN_ROWS) -> list[torch.Tensor | None]:
    """Per entry, the code ``U`` (``a x r``, orthonormal columns; None for the entries that
    :func:`coded_entries` leaves uncoded).

    Parameters
    ----------
    samples
        ``(k, p)`` sample updates (state-dict order), e.g. proxy updates of the current model.
    shapes
        The state entries' shapes.
    ratio
        Compression ratio of the coded entries (rows per code row).
    previous
        Optional ``(p,)`` update the code should also keep (the last applied global update):
        fitted with weight ``sqrt(k / 2)`` against unit-norm samples, a third of the fit's energy.
    min_rows
        Matrices with fewer rows are not coded (:func:`coded_entries`).
    """
    k = samples.shape[0]
    per_sample = [layer_views(s, shapes) for s in samples.double()]
    prev = layer_views(previous.double(), shapes) if previous is not None else None
    bases: list[torch.Tensor | None] = []
    for i, (shape, coded) in enumerate(zip(shapes, coded_entries(shapes, ratio, min_rows))):
        if not coded:
            bases.append(None)
            continue
        mats = [_unit(views[i]) for views in per_sample]
        if prev is not None and bool(prev[i].abs().sum() > 0):
            mats.append(_unit(prev[i]) * math.sqrt(k / 2))
        gram = sum(m @ m.T for m in mats)  # (a, a): its eigenvectors are the left singular ones
        _, vectors = torch.linalg.eigh(gram)  # ascending eigenvalues
        r = code_rank(shape[0], ratio)
        bases.append(vectors[:, -r:].flip(1).float().contiguous())
    return bases


def _unit(m: torch.Tensor) -> torch.Tensor:
    norm = m.norm()
    return m / norm if norm > 0 else m
