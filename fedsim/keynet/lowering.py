"""Lowering of linear layers to sparse homogeneous matrices on the flattened C·H·W input.

A layer with input ``x`` (``n_in`` values, PyTorch ``view(-1)`` order) and output ``y`` (``n_out``
values) becomes the ``(n_out + 1) × (n_in + 1)`` matrix ``M = [[W, b], [0, 1]]`` acting on
``[x; 1]``. Each stored entry either reads one parameter of a flat parameter vector ``theta``
(``src >= 0``) or is a constant (``src == -1``, value ``const``). The pattern is fixed by the
architecture alone, never by parameter values, so exact zeros keep their slots.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from torch import nn


@dataclass(frozen=True)
class Lowered:
    """Index maps of one lowered layer.

    Attributes
    ----------
    n_in, n_out : int
        Feature sizes without the homogeneous coordinate (the matrix is one larger each way).
    rows, cols : np.ndarray
        int64 coordinates of the stored entries.
    src : np.ndarray
        int64 index into the flat parameter vector, or -1 for a constant entry.
    const : np.ndarray
        float64 value of constant entries (0 where ``src >= 0``).
    out_shape : tuple[int, ...]
        Output feature shape (``(C, H, W)`` or ``(n,)``).
    """

    n_in: int
    n_out: int
    rows: np.ndarray
    cols: np.ndarray
    src: np.ndarray
    const: np.ndarray
    out_shape: tuple[int, ...]

    @property
    def nnz(self) -> int:
        """Number of stored entries, bias column and homogeneous 1 included."""
        return int(self.rows.size)

    @property
    def shape(self) -> tuple[int, int]:
        """Matrix shape ``(n_out + 1, n_in + 1)``."""
        return (self.n_out + 1, self.n_in + 1)

    def values(self, theta: np.ndarray) -> np.ndarray:
        """Entry values for the flat parameter vector ``theta`` (float64)."""
        vals = self.const.copy()
        used = self.src >= 0
        vals[used] = theta[self.src[used]]
        return vals

    def matrix(self, theta: np.ndarray) -> sp.csr_matrix:
        """The lowered matrix as scipy CSR (duplicates summed; exact zeros may be stored)."""
        return sp.coo_matrix((self.values(theta), (self.rows, self.cols)), shape=self.shape).tocsr()

    def first_positions(self, n_params: int) -> np.ndarray:
        """Entry index of the first occurrence of each parameter, or -1 when it never occurs."""
        pos = np.full(n_params, -1, dtype=np.int64)
        used = np.flatnonzero(self.src >= 0)
        order = used[::-1]  # last write wins, so reversed order keeps the first occurrence
        pos[self.src[order]] = order
        return pos

    def read_params(self, matrix: sp.spmatrix, n_params: int) -> tuple[np.ndarray, np.ndarray]:
        """Read parameters back from a (decrypted) lowered matrix via the fixed index maps.

        Returns
        -------
        idx, values : np.ndarray
            Parameter indices present in this layer and their values read from ``matrix``.
        """
        pos = self.first_positions(n_params)
        idx = np.flatnonzero(pos >= 0)
        m = sp.csr_matrix(matrix)
        vals = np.asarray(m[self.rows[pos[idx]], self.cols[pos[idx]]]).ravel()
        return idx, vals


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _homogeneous(n_in: int, n_out: int) -> tuple[list[np.ndarray], ...]:
    one = np.array([0], dtype=np.int64)
    return [one + n_out], [one + n_in], [one - 1], [np.ones(1)]


def _finish(parts: tuple[list[np.ndarray], ...], n_in: int, n_out: int,
            out_shape: tuple[int, ...]) -> Lowered:
    rows, cols, src, const = (np.concatenate(p) for p in parts)
    return Lowered(n_in, n_out, rows.astype(np.int64), cols.astype(np.int64),
                   src.astype(np.int64), const.astype(np.float64), out_shape)


def _taps(size: int, k: int, s: int, p: int, d: int, n_out: int):
    """For each kernel tap ``i``: (output positions, input positions) of the valid windows."""
    out = np.arange(n_out)
    res = []
    for i in range(k):
        pos = out * s - p + i * d
        ok = (pos >= 0) & (pos < size)
        res.append((out[ok], pos[ok]))
    return res


def _conv_taps(conv: nn.Conv2d, h: int, w: int):
    """Valid (output, input) positions per kernel row / column and the output size (Ho, Wo)."""
    if conv.padding_mode != "zeros":
        raise ValueError(f"padding_mode {conv.padding_mode!r} is not linear-zero padding")
    kh, kw = _pair(conv.kernel_size)
    sh, sw = _pair(conv.stride)
    dh, dw = _pair(conv.dilation)
    if isinstance(conv.padding, str):
        ph_tot, pw_tot = (0, 0) if conv.padding == "valid" else (dh * (kh - 1), dw * (kw - 1))
        ph, pw = ph_tot // 2, pw_tot // 2
    else:
        ph, pw = _pair(conv.padding)
        ph_tot, pw_tot = 2 * ph, 2 * pw
    ho = (h + ph_tot - dh * (kh - 1) - 1) // sh + 1
    wo = (w + pw_tot - dw * (kw - 1) - 1) // sw + 1
    return _taps(h, kh, sh, ph, dh, ho), _taps(w, kw, sw, pw, dw, wo), ho, wo


def lower_conv2d(conv: nn.Conv2d, in_shape: tuple[int, int, int], w_off: int,
                 b_off: int | None) -> Lowered:
    """Lower ``conv`` (any kernel, stride, padding, dilation, groups) on a ``(C, H, W)`` input.

    ``w_off`` / ``b_off`` are the offsets of ``conv.weight`` / ``conv.bias`` in the flat parameter
    vector (``b_off`` None when the layer has no bias). Matches ``F.conv2d`` including PyTorch's
    output size ``floor((H + 2p - d(k-1) - 1) / s) + 1``.
    """
    c_in, h, w = in_shape
    if c_in != conv.in_channels:
        raise ValueError(f"input has {c_in} channels, conv expects {conv.in_channels}")
    ty, tx, ho, wo = _conv_taps(conv, h, w)
    kh, kw = _pair(conv.kernel_size)
    c_out, g = conv.out_channels, conv.groups
    cin_g, cout_g = c_in // g, c_out // g
    n_in, n_out = c_in * h * w, c_out * ho * wo
    m = np.arange(c_out)[:, None, None]
    cl = np.arange(cin_g)[None, :, None]
    chan = (m // cout_g) * cin_g + cl  # absolute input channel of (m, c_local)
    parts = _homogeneous(n_in, n_out)
    for i, (oy, iy) in enumerate(ty):
        for j, (ox, ix) in enumerate(tx):
            if oy.size == 0 or ox.size == 0:
                continue
            opix = (oy[:, None] * wo + ox[None, :]).ravel()[None, None, :]
            ipix = (iy[:, None] * w + ix[None, :]).ravel()[None, None, :]
            rows = m * (ho * wo) + opix + 0 * cl
            cols = chan * (h * w) + ipix
            src = w_off + ((m * cin_g + cl) * kh + i) * kw + j + 0 * opix
            parts[0].append(rows.ravel())
            parts[1].append(cols.ravel())
            parts[2].append(src.ravel())
            parts[3].append(np.zeros(rows.size))
    if b_off is not None:
        pix = np.arange(ho * wo)
        parts[0].append((m.ravel()[:, None] * (ho * wo) + pix).ravel())
        parts[1].append(np.full(n_out, n_in))
        parts[2].append(np.repeat(b_off + np.arange(c_out), ho * wo))
        parts[3].append(np.zeros(n_out))
    return _finish(parts, n_in, n_out, (c_out, ho, wo))


def lower_linear(lin: nn.Linear, w_off: int, b_off: int | None) -> Lowered:
    """Lower ``lin`` to the dense block ``[[W, b], [0, 1]]`` (``nnz = out·in + out + 1``)."""
    n_in, n_out = lin.in_features, lin.out_features
    o, i = np.divmod(np.arange(n_out * n_in), n_in)
    parts = _homogeneous(n_in, n_out)
    parts[0].append(o)
    parts[1].append(i)
    parts[2].append(w_off + np.arange(n_out * n_in))
    parts[3].append(np.zeros(n_out * n_in))
    if b_off is not None:
        parts[0].append(np.arange(n_out))
        parts[1].append(np.full(n_out, n_in))
        parts[2].append(b_off + np.arange(n_out))
        parts[3].append(np.zeros(n_out))
    return _finish(parts, n_in, n_out, (n_out,))


def _pool_windows(size: int, k: int, s: int, p: int, ceil_mode: bool):
    """PyTorch AvgPool windows along one axis: (start, end, padded-size) per output index."""
    span = size + 2 * p - k
    n = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (n - 1) * s >= size + p:
        n -= 1
    start = np.arange(n) * s - p
    end_pad = np.minimum(start + k, size + p)
    lo, hi = np.maximum(start, 0), np.minimum(end_pad, size)
    return lo, hi, end_pad - start


def lower_avgpool2d(pool: nn.AvgPool2d, in_shape: tuple[int, int, int]) -> Lowered:
    """Lower ``pool`` with PyTorch semantics (padding, ceil_mode, count_include_pad, override)."""
    c, h, w = in_shape
    kh, kw = _pair(pool.kernel_size)
    sh, sw = _pair(pool.stride if pool.stride else pool.kernel_size)
    ph, pw = _pair(pool.padding)
    ylo, yhi, ysz = _pool_windows(h, kh, sh, ph, pool.ceil_mode)
    xlo, xhi, xsz = _pool_windows(w, kw, sw, pw, pool.ceil_mode)
    return _lower_windows(c, h, w, ylo, yhi, xlo, xhi, ysz, xsz, pool.count_include_pad,
                          pool.divisor_override)


def lower_adaptive_avgpool2d(pool: nn.AdaptiveAvgPool2d, in_shape: tuple[int, int, int]) -> Lowered:
    """Lower ``pool`` with PyTorch's adaptive windows ``[floor(i·H/Ho), ceil((i+1)·H/Ho))``."""
    c, h, w = in_shape
    ho, wo = _pair(pool.output_size)
    ho, wo = ho or h, wo or w
    ylo, yhi = (np.arange(ho) * h) // ho, -((-(np.arange(ho) + 1) * h) // ho)
    xlo, xhi = (np.arange(wo) * w) // wo, -((-(np.arange(wo) + 1) * w) // wo)
    return _lower_windows(c, h, w, ylo, yhi, xlo, xhi, yhi - ylo, xhi - xlo, True, None)


def _lower_windows(c, h, w, ylo, yhi, xlo, xhi, ysz, xsz, include_pad, override) -> Lowered:
    ho, wo = ylo.size, xlo.size
    n_in, n_out = c * h * w, c * ho * wo
    parts = _homogeneous(n_in, n_out)
    for oy in range(ho):
        for ox in range(wo):
            iy, ix = np.arange(ylo[oy], yhi[oy]), np.arange(xlo[ox], xhi[ox])
            ipix = (iy[:, None] * w + ix[None, :]).ravel()
            if override:
                div = override
            elif include_pad:
                div = ysz[oy] * xsz[ox]
            else:
                div = ipix.size
            ch = np.arange(c)[:, None]
            parts[0].append(np.broadcast_to(ch * (ho * wo) + oy * wo + ox, (c, ipix.size)).ravel())
            parts[1].append((ch * (h * w) + ipix[None, :]).ravel())
            parts[2].append(np.full(c * ipix.size, -1))
            parts[3].append(np.full(c * ipix.size, 1.0 / div))
    return _finish(parts, n_in, n_out, (c, ho, wo))


LOWERABLE = (nn.Conv2d, nn.Linear, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


def lower_module(module: nn.Module, in_shape: tuple[int, ...], w_off: int | None,
                 b_off: int | None) -> Lowered:
    """Lower any module in :data:`LOWERABLE` (parameter offsets as in :func:`lower_conv2d`)."""
    if isinstance(module, nn.Conv2d):
        return lower_conv2d(module, tuple(in_shape), w_off, b_off)
    if isinstance(module, nn.Linear):
        return lower_linear(module, w_off, b_off)
    if isinstance(module, nn.AvgPool2d):
        return lower_avgpool2d(module, tuple(in_shape))
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return lower_adaptive_avgpool2d(module, tuple(in_shape))
    raise TypeError(f"cannot lower {type(module).__name__}")


def lowered_nnz(module: nn.Module, in_shape: tuple[int, ...]) -> int:
    """nnz of the lowered matrix of ``module`` (bias column and homogeneous 1 included).

    Counted from the geometry alone, without building the matrix (for large models).
    """
    if isinstance(module, nn.Conv2d):
        c, h, w = in_shape
        ty, tx, ho, wo = _conv_taps(module, h, w)
        taps = sum(a.size for a, _ in ty) * sum(a.size for a, _ in tx)
        bias = module.out_channels * ho * wo if module.bias is not None else 0
        return taps * module.out_channels * (c // module.groups) + bias + 1
    if isinstance(module, nn.Linear):
        bias = module.out_features if module.bias is not None else 0
        return module.out_features * module.in_features + bias + 1
    if isinstance(module, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        return lower_module(module, in_shape, None, None).nnz
    raise TypeError(f"cannot lower {type(module).__name__}")
