"""Messages: the real payload that crosses a simulated link, and its byte count."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Message kinds used by the built-in protocols.
KINDS = (
    "model_down",  # server -> client: global model (wire domain), float32
    "update_up",  # client -> server: encoded model update
    "model_init",  # client -> server: initial (encrypted) model, when a client initialises
    "init_plain",  # server -> client: plaintext initial model (KeyNet with init_by: server)
    "codec_setup",  # server -> client: codec state a client needs once (e.g. the ENN encoder)
    "key_request",  # client -> key agent
    "key",  # key agent -> client
)


@dataclass(frozen=True, eq=False)
class Message:
    """One message on the simulated network.

    Parameters
    ----------
    kind
        What the message is (one of :data:`KINDS`).
    src, dst
        Node names, e.g. ``"server"``, ``"client/3"``, ``"key_agent"``.
    round
        Training round the message belongs to (0 for set-up traffic).
    payload
        The serialized bytes exactly as they would be sent.
    meta
        Simulator-side annotations (never counted on the wire, never read by attackers).
    """

    kind: str
    src: str
    dst: str
    round: int
    payload: bytes
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Size on the wire in bytes: the payload's length."""
        return len(self.payload)
