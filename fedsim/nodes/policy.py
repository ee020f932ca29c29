"""Server policies: who takes part in a round, how much each update weighs, how updates combine.

A policy is the server's decision-making, apart from its protocol (messages, waiting, deadlines),
in the spirit of Flower's ``Strategy``. The server process asks it three things: which clients to
select, and, once the round's updates are in, the new global model. Aggregation is in canonical
slot order (the position the server gave each client at dispatch), never arrival order, so a
network change that reorders arrivals does not change a single bit of what is learned.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import torch

from fedsim.codecs.base import UpdateCodec


@dataclass(frozen=True)
class Update:
    """One client's upload as the server received it."""

    slot: int  # the client's position in the round's selection (sent with the model)
    client: int
    payload: bytes


class ServerPolicy(Protocol):
    """Selection, weighting and aggregation of one scheme."""

    def select(self, rnd: int, online: Sequence[int]) -> list[int]:
        """The clients of round ``rnd`` in slot order, chosen from ``online`` (sorted ids)."""

    def aggregate(self, rnd: int, global_wire: torch.Tensor, updates: Sequence[Update]
                  ) -> torch.Tensor:
        """The next global model (flat wire vector) from round ``rnd``'s ``updates`` (any order)."""

    def state(self) -> dict[str, Any]:
        """What a checkpoint must keep to resume the policy (JSON-serialisable)."""

    def restore(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state`'s output."""


class AveragingPolicy:
    """Synchronous weighted averaging of decoded updates: FedAvg and FedPAQ (and KeyNet, ENN,
    which change the domain or the codec, not the policy).

    Selection: ``ceil(m * overcommit)`` of the online clients, uniformly without replacement from
    the server's own stream. Weighting: by sample count (``samples``, FedAvg) or uniform
    (``uniform``, FedPAQ and ENN). Aggregation: the codec's weighted mean of the updates in slot
    order, each with the slot it was selected in (ENN's decoder input), added to the global model.
    """

    def __init__(self, codec: UpdateCodec, *, clients_per_round: int, overcommit: float,
                 weighting: Literal["samples", "uniform"], sample_counts: Mapping[int, int],
                 numel: int, selection_seed: int,
                 release: Callable[[int, torch.Tensor, int], torch.Tensor] | None = None):
        self.codec, self.numel, self.release = codec, numel, release
        self.clients_per_round, self.overcommit = clients_per_round, overcommit
        self.weighting, self.sample_counts = weighting, sample_counts
        self._rng = np.random.default_rng(selection_seed)

    def select(self, rnd: int, online: Sequence[int]) -> list[int]:
        return _draw(self._rng, online, math.ceil(self.clients_per_round * self.overcommit - 1e-9))

    def weights(self, clients: Sequence[int]) -> list[float]:
        """Normalised weights of ``clients`` (sum 1)."""
        return _shares(self.weighting, self.sample_counts, clients)

    def aggregate(self, rnd: int, global_wire: torch.Tensor, updates: Sequence[Update]
                  ) -> torch.Tensor:
        ordered = sorted(updates, key=lambda u: u.slot)
        delta = self.codec.aggregate([u.payload for u in ordered],
                                     self.weights([u.client for u in ordered]),
                                     [u.slot for u in ordered], numel=self.numel)
        if self.release is not None:
            delta = self.release(rnd, delta, len(ordered))
        return global_wire + delta

    def state(self) -> dict[str, Any]:
        return {"rng": self._rng.bit_generator.state}

    def restore(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state["rng"]


@dataclass(frozen=True)
class BufferedUpdate:
    """One client's upload in an asynchronous server's buffer."""

    round: int  # the round (aggregation number) in progress when the client got its model
    client: int
    payload: bytes
    staleness: int  # aggregations between the client's model version and the one it updates


class FedBuffPolicy:
    """FedBuff (Nguyen et al. 2022): buffered asynchronous aggregation with staleness discount.

    ``x <- x + server_lr * sum_i w_i s(tau_i) decode(update_i)``, with ``w_i`` the sample-count
    (``samples``) or uniform (``uniform``) weights of the buffered clients (sum 1) and
    ``s(tau) = (1 + tau) ** -staleness_exponent``. The buffer is summed in canonical order
    (round, then client), not arrival order. Selection: uniformly among the eligible clients,
    from the server's own stream.
    """

    def __init__(self, codec: UpdateCodec, *, weighting: Literal["samples", "uniform"],
                 sample_counts: Mapping[int, int], numel: int, staleness_exponent: float,
                 server_lr: float, selection_seed: int):
        self.codec, self.numel = codec, numel
        self.weighting, self.sample_counts = weighting, sample_counts
        self.staleness_exponent, self.server_lr = staleness_exponent, server_lr
        self._rng = np.random.default_rng(selection_seed)

    def select(self, rnd: int, eligible: Sequence[int], k: int) -> list[int]:
        """``k`` (or all, if fewer) of ``eligible`` (sorted ids), in the order they are sent."""
        return _draw(self._rng, eligible, k)

    def discount(self, staleness: int) -> float:
        """``s(tau)``: the weight factor of an update ``staleness`` aggregations old."""
        return (1.0 + staleness) ** -self.staleness_exponent

    def aggregate(self, rnd: int, global_wire: torch.Tensor, updates: Sequence[BufferedUpdate]
                  ) -> torch.Tensor:
        ordered = sorted(updates, key=lambda u: (u.round, u.client))
        shares = _shares(self.weighting, self.sample_counts, [u.client for u in ordered])
        factors = [w * self.discount(u.staleness) for w, u in zip(shares, ordered)]
        total = sum(factors)  # the codec averages with weights that sum to 1; scale after
        delta = self.codec.aggregate([u.payload for u in ordered], [f / total for f in factors],
                                     list(range(len(ordered))), numel=self.numel)
        return global_wire + (self.server_lr * total) * delta

    def state(self) -> dict[str, Any]:
        return {"rng": self._rng.bit_generator.state}

    def restore(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state["rng"]


def _draw(rng: np.random.Generator, pool: Sequence[int], k: int) -> list[int]:
    """``k`` (or all, if fewer) of ``pool`` uniformly without replacement, sorted."""
    k = min(k, len(pool))
    chosen = rng.choice(len(pool), size=k, replace=False) if k else []
    return sorted(pool[i] for i in chosen)


def _shares(weighting: Literal["samples", "uniform"], sample_counts: Mapping[int, int],
            clients: Sequence[int]) -> list[float]:
    """Each client's weight, by sample count (``samples``) or equal (``uniform``); sum 1."""
    raw = [float(sample_counts[c]) if weighting == "samples" else 1.0 for c in clients]
    total = sum(raw)
    return [w / total for w in raw]
