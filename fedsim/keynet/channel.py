"""Channel-space keys (``space="channel"``): keys act on the channel axes of each weight tensor.

For a state entry ``W`` of shape ``(d0, d1, ...)`` (conv: out channels, in channels per group,
kernel; linear: out, in) every trailing index ``t`` is encrypted as
``Ŵ[:, :, t] = A_out · W[:, :, t] · A_in⁻¹`` with ``A_out`` on ``d0`` and ``A_in`` on ``d1``.
Vectors and scalars (biases, BatchNorm affine and running statistics) get one vector key each.
The map is linear, so averaging commutes exactly as in the lowered space, and the ciphertext
has exactly as many values as the plaintext (no size blow-up). The result is not a working
network (it mixes channels of the kernel); use the lowered space for encrypted inference.
"""

from __future__ import annotations

import numpy as np

from fedsim.keynet.cipher import CipherBuilder, LinearCipher, Segment, sandwich
from fedsim.keynet.keys import KeySet, KeySlot
from fedsim.keynet.plan import NetworkPlan


def channel_slots(plan: NetworkPlan, alpha: int = 1) -> list[KeySlot]:
    """Key slots for the channel space: ``(out, in)`` per tensor of rank ≥ 2, one per vector."""
    slots = []
    for name, shape in zip(plan.names, plan.shapes):
        if len(shape) >= 2:
            slots.append(KeySlot(shape[0], alpha, role=f"{name}.out"))
            slots.append(KeySlot(shape[1], alpha, role=f"{name}.in"))
        else:
            slots.append(KeySlot(int(np.prod(shape)), 1, role=name))
    return slots


def channel_cipher(plan: NetworkPlan, keys: KeySet) -> LinearCipher:
    """The :class:`LinearCipher` of ``plan``'s state entries under channel-space ``keys``."""
    slots = channel_slots(plan)
    if keys.space != "channel" or [k.n for k in keys.keys] != [s.size for s in slots]:
        raise ValueError("channel-space keys do not match the model's state entries")
    b = CipherBuilder(plan.n_params)
    it = iter(keys.keys)
    for name, shape, start in zip(plan.names, plan.shapes, plan.offsets[:-1]):
        numel = int(np.prod(shape))
        idx = start + np.arange(numel)
        if len(shape) < 2:
            b.add_vector(name, idx, next(it), kind="tensor")
            continue
        k_out, k_in = next(it), next(it)
        d1, t = shape[1], numel // (shape[0] * shape[1])
        r, rem = np.divmod(np.arange(numel), d1 * t)
        c, tt = np.divmod(rem, t)
        s = b.size
        e, i, j, coef = sandwich(r, c, k_out.matrix(False).tocsc(),
                                 k_in.inverse_matrix(False).tocsr())
        enc = (s + (i * d1 + j) * t + tt[e], idx[e], coef)
        e, i, j, coef = sandwich(r, c, k_out.inverse_matrix(False).tocsr(),
                                 k_in.matrix(False).tocsc())
        dec = (idx[e], s + (i * d1 + j) * t + tt[e], coef)
        b.add(Segment(name, "tensor", s, s + numel, numel), enc, dec)
    return b.build()
