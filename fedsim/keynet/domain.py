"""``KeyNetDomain``: the weight domain whose wire vector is a KeyNet ciphertext."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from fedsim.domain import WeightDomain
from fedsim.keynet.channel import channel_cipher, channel_slots
from fedsim.keynet.cipher import LinearCipher, Segment, lowered_cipher
from fedsim.keynet.keys import SPACES, Key, KeySet
from fedsim.keynet.plan import NetworkPlan, plan_network


def make_keys(plan: NetworkPlan, seed: int | np.random.Generator, space: str = "lowered",
              alpha: int = 1, encrypt_output: bool = False,
              gains: str = "continuous") -> KeySet:
    """Sample the key set of ``plan`` for ``space`` ("lowered" | "channel").

    ``alpha`` is the block size wherever the math allows it (lowered chains: input and
    boundaries without a following activation; per-layer and channel keys: everywhere except
    vector keys). The same ``(plan, seed, space, alpha, encrypt_output)`` gives the same keys,
    so clients may derive them from a shared seed instead of receiving them. ``gains`` is
    ``"continuous"`` or ``"power_of_two"`` (exact fp arithmetic, see :mod:`fedsim.keynet.keys`).
    """
    if space == "lowered":
        slots = plan.key_slots(alpha, encrypt_output)
    elif space == "channel":
        slots = channel_slots(plan, alpha)
    else:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    return KeySet.generate(slots, seed, space, gains)


class KeyNetDomain(WeightDomain):
    """Encrypts a model state into a flat float32 ciphertext vector and decrypts it back.

    Parameters
    ----------
    model : nn.Module
        Template model (architecture and state layout; its values are not used).
    input_shape : tuple[int, ...]
        Shape of one input sample, e.g. ``(1, 28, 28)``.
    keys : KeySet
        Keys from :func:`make_keys` (or :meth:`KeySet.from_bytes`) for this model and space.
    space : str
        ``"lowered"`` (KeyNet on lowered sparse matrices) or ``"channel"`` (keys on the channel
        axes of each weight tensor).
    chained : bool or None
        Lowered space only: force (True) or forbid (False) chained keys; None detects chains.
    plan : NetworkPlan or None
        A precomputed :func:`plan_network` result for ``model`` (avoids lowering twice).
    """

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], keys: KeySet,
                 space: str = "lowered", chained: bool | None = None,
                 plan: NetworkPlan | None = None):
        if keys.space != space:
            raise ValueError(f"keys are for space {keys.space!r}, domain is {space!r}")
        self.space = space
        self.keys = keys
        self.plan = plan or plan_network(model, tuple(input_shape), chained,
                                         lower=space == "lowered")
        self.cipher: LinearCipher = (lowered_cipher if space == "lowered" else
                                     channel_cipher)(self.plan, keys)
        state = model.state_dict()
        self._dtypes = [state[k].dtype for k in self.plan.names]
        self._sizes = np.diff(self.plan.offsets).tolist()

    @classmethod
    def from_seed(cls, model: nn.Module, input_shape: tuple[int, ...],
                  seed: int | np.random.Generator, space: str = "lowered", alpha: int = 1,
                  encrypt_output: bool = False, chained: bool | None = None,
                  gains: str = "continuous") -> KeyNetDomain:
        """Plan ``model``, derive keys from ``seed`` (see :func:`make_keys`) and build."""
        plan = plan_network(model, tuple(input_shape), chained, lower=space == "lowered")
        keys = make_keys(plan, seed, space, alpha, encrypt_output, gains)
        return cls(model, input_shape, keys, space, plan=plan)

    @property
    def numel(self) -> int:
        """Length of the ciphertext vector (values)."""
        return int(self.cipher.offset.size)

    @property
    def image_key(self) -> Key:
        """The input (sensor) key ``A_0`` of a chained lowered domain (for ``encrypt_input``)."""
        if self.space != "lowered" or not self.plan.chained:
            raise ValueError("only chained lowered-space domains have an image key")
        return self.keys.keys[0]

    @property
    def segments(self) -> tuple[Segment, ...]:
        """Wire layout: one segment per lowered layer / tensor, then the vector-keyed rest."""
        return self.cipher.segments

    def flatten(self, state: dict[str, torch.Tensor]) -> np.ndarray:
        """Flat float64 parameter vector of ``state`` (float entries in state order)."""
        return np.concatenate([state[k].detach().reshape(-1).double().cpu().numpy()
                               for k in self.plan.names])

    def to_wire(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """Float32 ciphertext of ``state`` (computed in float64, rounded once)."""
        return torch.from_numpy(self.cipher.encrypt(self.flatten(state)).astype(np.float32))

    def from_wire(self, flat: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Decrypt a ciphertext vector to a state dict of the float entries (template dtypes)."""
        if flat.numel() != self.numel:
            raise ValueError(f"wire vector has {flat.numel()} values, expected {self.numel}")
        theta = self.cipher.decrypt(flat.detach().double().cpu().numpy().reshape(-1))
        parts = np.split(theta, np.cumsum(self._sizes)[:-1])
        return OrderedDict(
            (k, torch.from_numpy(p.reshape(s)).to(d))
            for k, p, s, d in zip(self.plan.names, parts, self.plan.shapes, self._dtypes))
