"""The adversary's view under secure aggregation: the aggregate of a round's survivors.

The server (or anyone who sees two consecutive global models) learns ``x_{r+1} - x_r``, the
weighted mean of round ``r``'s surviving updates, and from the ``sa_unmask`` message who they
are. In the attack-friendly setting (every client one SGD step on ``B`` images) with uniform
weighting that mean is exactly one SGD step on the survivors' ``r B`` images together; the
adversary attacks it as such (with sample-count weighting the assumption is approximate).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from fedsim.attacks import adapters
from fedsim.attacks.observation import Observation
from fedsim.secagg.wire import unpack_ids
from fedsim.wire import unpack_vector


def _global_model(adv: Any, rnd: int) -> bytes | None:
    """A ``model_down`` payload of round ``rnd`` the adversary captured (all are the same)."""
    return next((p for (r, _), p in sorted(adv.models.items()) if r == rnd), None)


def observations(harness: Any, adv: Any
                 ) -> Iterator[tuple[int, int, Observation | str, Tensor, Tensor]]:
    """``(round, clients aggregated, observation or why not, private inputs, labels)`` for each
    attacked round whose survivors ``adv`` learned (at most ``max_targets``)."""
    rounds = [r for r in sorted(harness.a.rounds) if r in adv.unmask][: harness.a.max_targets]
    for rnd in rounds:
        survivors = unpack_ids(adv.unmask[rnd])
        truths = [harness._truth(c, rnd) for c in survivors]
        inputs = torch.cat([t[0] for t in truths])
        labels = torch.cat([t[1] for t in truths])
        before, after = _global_model(adv, rnd), _global_model(adv, rnd + 1)
        obs: Observation | str
        if before is None or after is None:
            obs = "the next global model was not seen"
        elif any(len(t[2]) != 1 for t in truths) or not all(
                harness.targeted(c) for c in survivors):
            obs = "the aggregate of multi-step local training (use mode: friendly)"
        else:
            wire0 = unpack_vector(before)
            model = copy.deepcopy(harness.template)
            model.load_state_dict(harness.crypto.eval_domain.from_wire(wire0), strict=False)
            obs = adapters.update_observation(
                model, unpack_vector(after) - wire0, harness.cfg.training.lr,
                [torch.arange(len(inputs))], tuple(inputs.shape), harness.data.num_classes,
                harness.norm)
        yield rnd, len(survivors), obs, inputs, labels
