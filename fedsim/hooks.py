"""Engine hooks: the points where tests, the attack harness and tools watch a run.

Every hook is optional and called synchronously from the engine, outside the simulated protocol:
it sees what happened, it cannot change the simulated time. A hook that raises stops the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from fedsim.message import Message


@dataclass(frozen=True)
class EngineHooks:
    """Callbacks of one run (see :func:`fedsim.engine.run`)."""

    #: Each process object (server, key agent, every client) when it is built.
    on_node: Callable[[Any], None] | None = None
    #: Each message, when it is delivered (after its last byte crossed its last link).
    on_message: Callable[[Message], None] | None = None
    #: Each new global model: the round and the plaintext state dict (host tensors, read-only),
    #: round 0 being the initial model.
    on_global_model: Callable[[int, dict[str, torch.Tensor]], None] | None = None
    #: Each closed round's row of the rounds table (before evaluation columns are added).
    on_round_closed: Callable[[dict[str, Any]], None] | None = None
