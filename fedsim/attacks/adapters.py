"""Scheme adapters: turn what an adversary captured into an :class:`Observation` to attack.

Each adapter pairs the observed tensors with the forward model that simulates them for a
candidate input, so every attack (DLG, iDLG, IG) runs unchanged on every scheme:

* plain FedAvg / FedPAQ (:func:`update_observation`): the observation is the client's flat
  update (for FedPAQ the dequantized payload, ``QsgdCodec.decode``); the forward model is the
  *unquantized* update.  One local step on the whole batch is attacked as a gradient
  ``g = −Δ/lr`` (so L2 attacks see gradient scale); several steps are unrolled
  (:class:`ScheduledSgdForwardModel`).
* KeyNet without keys (:class:`EncryptedForwardModel`): the encrypted model is a working network
  on encrypted images, so the attack inverts it and recovers the encrypted image ``A_0 x``.
* ENN slot isolation (:func:`enn_isolate`): decode one client's code with the other slots
  zero-filled, filled with the code of a zero update, or by leave-one-out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from fedsim.attacks.contracts import SlotDecoder
from fedsim.attacks.observation import (
    GradientForwardModel,
    Normalization,
    Observation,
    _model_copy,
    label_loss,
    unrolled_sgd_delta,
)
from fedsim.keynet.layout import layout_bytes, parse_layout

if TYPE_CHECKING:
    from fedsim.keynet.domain import KeyNetDomain
    from fedsim.keynet.plan import NetworkPlan

Isolation = Literal["zero", "silent", "loo"]
ISOLATIONS: tuple[str, ...] = ("zero", "silent", "loo")


def split_flat(model: nn.Module, flat: Tensor, dtype: torch.dtype) -> list[Tensor]:
    """Split a flat plain-domain vector into tensors shaped like ``model``'s parameters."""
    params = list(model.parameters())
    if flat.numel() != sum(p.numel() for p in params):
        raise ValueError(f"flat vector has {flat.numel()} values, model has "
                         f"{sum(p.numel() for p in params)} parameters")
    parts = torch.split(flat.detach().to(dtype), [p.numel() for p in params])
    return [t.reshape(p.shape) for t, p in zip(parts, params)]


class ScheduledSgdForwardModel:
    """Weight difference ``θ_K − θ_0`` of K plain SGD steps on given mini-batches (unrolled).

    As :class:`~fedsim.attacks.observation.UnrolledFedAvgForwardModel` (``model`` at ``θ_0``,
    known ``lr``, simulation ``dtype``), but step ``k`` uses the candidate rows ``schedule[k]``:
    the client's real batching order, assumed known.
    """

    def __init__(self, model: nn.Module, lr: float, schedule: Sequence[Tensor],
                 dtype: torch.dtype = torch.float64) -> None:
        if lr <= 0 or not schedule:
            raise ValueError('"lr" must be > 0 and the schedule must have at least one step')
        self.model = _model_copy(model, dtype)
        self.dtype, self.lr = dtype, lr
        self.schedule = [torch.as_tensor(s, dtype=torch.long) for s in schedule]
        self._start = {n: p.detach() for n, p in self.model.named_parameters()}

    def __call__(self, inputs: Tensor, labels: Tensor) -> list[Tensor]:
        return unrolled_sgd_delta(self.model, self._start, self.lr, inputs, labels, self.schedule)

    def as_gradients(self, observed: Sequence[Tensor]) -> list[Tensor] | None:
        """``−Δ / (lr·K)``: the mean-gradient approximation."""
        return [-d / (self.lr * len(self.schedule)) for d in observed]

    def describe(self) -> dict[str, Any]:
        return {"kind": "sgd_scheduled", "lr": self.lr, "steps": len(self.schedule),
                "dtype": str(self.dtype).removeprefix("torch.")}


def update_observation(model: nn.Module, update: Tensor, lr: float, schedule: Sequence[Tensor],
                       input_shape: tuple[int, ...], num_classes: int,
                       normalization: Normalization,
                       dtype: torch.dtype = torch.float64) -> Observation:
    """Observation of a plain-domain flat update (FedAvg, or a dequantized FedPAQ update).

    Parameters
    ----------
    model
        Victim model loaded with the broadcast weights ``θ_0``.
    update
        Observed flat update ``Δ`` (float32, parameter order).
    lr
        Client learning rate.
    schedule
        Candidate rows used by each local step; one step over all rows is attacked as the
        gradient ``−Δ/lr``, anything else through :class:`ScheduledSgdForwardModel`.
    input_shape, num_classes, normalization
        The private batch's shape ``(B, C, H, W)``, the class count and input normalization.
    """
    deltas = split_flat(model, update, dtype)
    one_step = len(schedule) == 1 and torch.equal(
        torch.sort(torch.as_tensor(schedule[0])).values, torch.arange(input_shape[0]))
    if one_step:
        fm: Any = GradientForwardModel(model, dtype=dtype)
        target = tuple(-d / lr for d in deltas)
    else:
        fm = ScheduledSgdForwardModel(model, lr, schedule, dtype=dtype)
        target = tuple(deltas)
    return Observation(target, fm, tuple(input_shape), num_classes, normalization)


# -- KeyNet: the encrypted network, from public layout and ciphertext only ----------------------
@dataclass(frozen=True)
class EncryptedLayer:
    """Public structure of one lowered encrypted layer: CSR pattern and trailing activations."""

    rows: np.ndarray  # row index of each wire entry (int64)
    cols: np.ndarray  # column index of each wire entry (int64)
    shape: tuple[int, int]  # (n_out + 1, n_in + 1), homogeneous
    start: int  # first wire position
    acts: tuple[nn.Module, ...]


@dataclass(frozen=True)
class EncryptedLayout:
    """The wire layout of a chained lowered KeyNet ciphertext; no key material.

    KeyNet publishes the encrypted model as sparse matrices, so their sparsity pattern is public;
    the homogeneous last row and column of every layer are the affine part by construction.
    """

    layers: tuple[EncryptedLayer, ...]
    numel: int

    @classmethod
    def from_domain(cls, domain: KeyNetDomain) -> EncryptedLayout:
        """The layout a ``KeyNetDomain`` publishes (tests; runs parse the captured message)."""
        payload = layout_bytes(domain)
        if payload is None:
            raise ValueError("the encrypted-domain attack needs a chain network in the lowered space")
        return cls.from_message(payload, domain.plan)

    @classmethod
    def from_message(cls, payload: bytes, plan: NetworkPlan) -> EncryptedLayout:
        """Parse a captured ``keynet_layout`` message; activations come from the architecture."""
        patterns, numel = parse_layout(payload)
        layers = []
        for pat, lp in zip(patterns, plan.layers, strict=True):
            rows = np.repeat(np.arange(pat.shape[0]), np.diff(pat.indptr)).astype(np.int64)
            layers.append(EncryptedLayer(rows, pat.indices, pat.shape, pat.start, tuple(lp.acts)))
        return cls(tuple(layers), numel)


class EncryptedForwardModel:
    """Gradient of the encrypted network w.r.t. its tied ciphertext parameters.

    Wire entries that encrypt the same parameter hold identical values (exactly, for
    permutation keys); the attacker ties them by grouping equal ``(θ̂_0, Δ̂)`` pairs, which it
    observes.  Entries of the homogeneous last row are constants and are excluded.  For
    permutation keys the result is the plain gradient with permuted coordinates, so the
    observation ``−Δ̂/lr`` (one group representative each) matches it exactly.

    Parameters
    ----------
    layout
        Public wire layout.
    wire0, delta
        Broadcast ciphertext ``θ̂_0`` and observed ciphertext update ``Δ̂`` (float32).
    dtype
        Precision of the simulation.
    """

    def __init__(self, layout: EncryptedLayout, wire0: Tensor, delta: Tensor,
                 dtype: torch.dtype = torch.float64) -> None:
        self.layout, self.dtype = layout, dtype
        pairs = torch.stack([wire0.float(), delta.float()], dim=1).numpy()
        trainable = np.ones(layout.numel, dtype=bool)
        for layer in layout.layers:
            last = layer.rows == layer.shape[0] - 1
            trainable[layer.start + np.flatnonzero(last)] = False
        keys = np.where(trainable[:, None], pairs, np.nan)
        _, first, gid = np.unique(np.nan_to_num(keys, nan=np.inf), axis=0, return_index=True,
                                  return_inverse=True)
        gid = gid.reshape(-1)
        const = ~trainable
        self.n_groups = int(first.size)
        self._gid = torch.from_numpy(gid)
        self._rep = torch.from_numpy(first)
        self._const = torch.from_numpy(const)
        self._values0 = wire0.detach().to(dtype)
        self._params = self._values0[self._rep].clone()

    def observed(self, delta: Tensor, lr: float) -> Tensor:
        """The observation as a gradient: ``−Δ̂/lr`` at one representative entry per group."""
        return -delta.detach().to(self.dtype)[self._rep] / lr

    def _network(self, params: Tensor, z: Tensor) -> Tensor:
        values = torch.where(self._const, self._values0, params[self._gid])
        h = torch.cat([z, torch.ones(z.shape[0], 1, dtype=z.dtype)], dim=1)
        for layer in self.layout.layers:
            vals = values[layer.start:layer.start + layer.rows.size]
            contrib = vals * h[:, torch.from_numpy(layer.cols)]
            out = torch.zeros(z.shape[0], layer.shape[0], dtype=z.dtype)
            out = out.index_add(1, torch.from_numpy(layer.rows), contrib)
            for act in layer.acts:
                out = torch.cat([act(out[:, :-1]), out[:, -1:]], dim=1)
            h = out
        return h[:, :-1]

    def logits(self, inputs: Tensor) -> Tensor:
        """Encrypted-network outputs for encrypted inputs (any shape ``(B, ...)``)."""
        return self._network(self._params, inputs.reshape(inputs.shape[0], -1).to(self.dtype))

    def __call__(self, inputs: Tensor, labels: Tensor) -> list[Tensor]:
        params = self._params.clone().requires_grad_(True)
        z = inputs.reshape(inputs.shape[0], -1)
        loss = label_loss(self._network(params, z), labels)
        return list(torch.autograd.grad(loss, [params], create_graph=True))

    def as_gradients(self, observed: Sequence[Tensor]) -> list[Tensor] | None:
        """Last layer's weight and bias gradient (output key is the identity: rows = classes)."""
        last = self.layout.layers[-1]
        n_out, n_in = last.shape[0] - 1, last.shape[1] - 1
        pos = torch.arange(last.start, last.start + last.rows.size)
        vals = observed[0][self._gid[pos]]
        dense = torch.zeros(last.shape, dtype=vals.dtype)
        dense[torch.from_numpy(last.rows), torch.from_numpy(last.cols)] = vals
        return [dense[:n_out, :n_in], dense[:n_out, n_in]]

    def describe(self) -> dict[str, Any]:
        return {"kind": "keynet_encrypted", "groups": self.n_groups,
                "dtype": str(self.dtype).removeprefix("torch.")}


def encrypted_observation(layout: EncryptedLayout, wire0: Tensor, delta: Tensor, lr: float,
                          input_shape: tuple[int, ...], num_classes: int,
                          normalization: Normalization,
                          dtype: torch.dtype = torch.float64) -> Observation:
    """Observation of a KeyNet ciphertext update attacked in the encrypted domain (no keys).

    The candidate has the plain batch's shape ``(B, C, H, W)`` and is read as the flattened
    encrypted image; one local step on the whole batch is assumed (gradient ``−Δ̂/lr``).
    """
    fm = EncryptedForwardModel(layout, wire0, delta, dtype)
    return Observation((fm.observed(delta, lr),), fm, tuple(input_shape), num_classes,
                       normalization)


# -- ENN: isolating one client's update from the decoder ----------------------------------------
def enn_isolate(codec: SlotDecoder, payloads: Sequence[bytes], index: int, method: Isolation,
                numel: int) -> Tensor:
    """Approximate update of client ``payloads[index]`` decoded from its ENN code alone.

    Slots follow the order of ``payloads`` (the server's aggregation order); slots beyond them
    hold the code of a zero update, as in the codec's aggregation.

    Parameters
    ----------
    codec
        The server's slot decoder (:class:`~fedsim.codecs.enn.EnnCodec`; see
        :class:`~fedsim.attacks.contracts.SlotDecoder`).
    payloads
        Every ENN payload of the round, in aggregation order.
    index
        Position of the targeted client's payload.
    method
        ``"zero"``: other slots zero; ``"silent"``: other slots get the code of a zero update;
        ``"loo"``: ``D(all codes) − D(all codes, slot index silent)``.
    numel
        Update length.

    Returns
    -------
    Tensor
        Float32 update estimate of length ``numel``, scaled by ``N`` (parameter units). With
        chunk side information the absent slots' codes are reweighted to the zero-update code,
        so ``zero`` equals ``silent``.
    """
    big_n = codec.config.slots
    offset = codec.payload_offset(payloads[0])
    parsed = [codec.parse(p, numel, offset) for p in payloads]
    silent, silent_rms, _ = codec.silent_stack(numel, offset)

    def decode(codes: Tensor, rms: Tensor, slots: Sequence[int]) -> Tensor:
        present = torch.zeros(big_n, dtype=torch.bool)
        present[list(slots)] = True
        return codec.decode_stack(codes, rms, present) * big_n

    if method == "loo":
        full, rms = silent.clone(), silent_rms.clone()
        for slot, (code, r) in enumerate(parsed):
            full[:, slot], rms[:, slot] = code, r
        without = full.clone()
        without[:, index] = silent[:, index]
        others = [s for s in range(len(parsed)) if s != index]
        out = decode(full, rms, range(len(parsed))) - decode(without, rms, others)
    elif method in ("zero", "silent"):
        stack = torch.zeros_like(silent) if method == "zero" else silent.clone()
        rms = silent_rms.clone()
        stack[:, index], rms[:, index] = parsed[index]
        out = decode(stack, rms, [index])
    else:
        raise ValueError(f"unknown ENN isolation {method!r}; choose from {ISOLATIONS}")
    return codec.unchunk(out, numel, offset).float()
