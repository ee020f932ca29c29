"""Encrypted inference: the ciphertext of a chain network is itself a working network.

With image key ``A_0``, ``Ŵ_L … σ(Ŵ_1 · A_0 x̃) = A_L y``: the encrypted network applied to the
encrypted image gives the (output-keyed) plain output. :func:`encrypted_network` builds that
network from the ciphertext alone, which is exactly what a server-side attacker holds.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from fedsim.keynet.cipher import Segment
from fedsim.keynet.domain import KeyNetDomain
from fedsim.keynet.keys import Key


def encrypt_input(key: Key, x: torch.Tensor) -> torch.Tensor:
    """Encrypted images ``A_0 · vec(x)`` of shape ``(B, n0)`` for a batch ``x`` of shape (B, ...)."""
    flat = x.detach().reshape(x.shape[0], -1).double().cpu().numpy()
    if flat.shape[1] != key.n:
        raise ValueError(f"inputs have {flat.shape[1]} values, key has {key.n}")
    enc = (key.matrix(homogeneous=False) @ flat.T).T
    return torch.from_numpy(np.ascontiguousarray(enc)).to(x.dtype)


class EncryptedNetwork(nn.Module):
    """Chain of sparse homogeneous layers with plain activations in between (float32, CPU).

    ``forward`` maps encrypted inputs ``(B, n0)`` to keyed outputs ``(B, n_L)``.
    """

    def __init__(self, mats: list[torch.Tensor], acts: list[tuple[nn.Module, ...]]):
        super().__init__()
        self.mats = mats
        self.acts = nn.ModuleList(nn.Sequential(*a) for a in acts)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.cat([z.float(), torch.ones(z.shape[0], 1)], dim=1).T
        for mat, act in zip(self.mats, self.acts):
            h = mat @ h
            if len(act):
                h = torch.cat([act(h[:-1]), h[-1:]], dim=0)
        return h[:-1].T.contiguous()


def _sparse(seg: Segment, values: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(torch.from_numpy(seg.indptr),
                                       torch.from_numpy(seg.indices), values, size=seg.shape,
                                       check_invariants=False)


def encrypted_network(domain: KeyNetDomain, wire: torch.Tensor) -> EncryptedNetwork:
    """The encrypted-domain network of a chained lowered :class:`KeyNetDomain` ciphertext.

    Uses only the wire layout (public, key-derived structure) and the ciphertext values.
    """
    if domain.space != "lowered" or not domain.plan.chained:
        raise ValueError("encrypted inference needs a chain network in the lowered space")
    wire = wire.detach().float().cpu()
    layers = [s for s in domain.segments if s.kind == "layer"]
    mats = [_sparse(s, wire[s.start:s.stop].clone()) for s in layers]
    return EncryptedNetwork(mats, [lp.acts for lp in domain.plan.layers])
