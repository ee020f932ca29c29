"""Messages: the real payload that crosses a simulated link, and its byte count."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Message kinds used by the built-in protocols.
KINDS = (
    "model_down",  # server -> client: global model (wire domain), float32
    "update_up",  # client -> server: encoded model update
    "model_init",  # client -> server: initial (encrypted) model, when a client initialises
    "init_plain",  # server -> client: plaintext initial model (KeyNet with init_by: server)
    "codec_setup",  # server -> client: codec state a client needs once (e.g. the ENN encoder)
    "codec_round",  # server -> client: codec state of one round (e.g. refitted ENN layer codes)
    "key_request",  # client -> key agent
    "key",  # key agent -> client
    # secure aggregation (fedsim.secagg.wire): client -> server
    "sa_advertise", "sa_shares", "masked_update", "sa_reveal",
    # secure aggregation: server -> client
    "sa_keys", "sa_routed", "sa_unmask", "sa_abort",
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
        The serialized bytes exactly as they would be sent, or a :class:`DeferredPayload`
        (known size, content computed when the receiver first uses it).
    meta
        Simulator-side annotations (never counted on the wire, never read by attackers).
    """

    kind: str
    src: str
    dst: str
    round: int
    payload: bytes | DeferredPayload
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Size on the wire in bytes: the payload's length."""
        return len(self.payload)


class DeferredPayload:
    """A payload whose size is known before its content (``nbytes`` bytes); ``make()`` computes
    the content on first :meth:`resolve`. A client update whose size does not depend on its
    values is sent this way, so an update the server never uses is never computed."""

    def __init__(self, nbytes: int, make: Callable[[], bytes]):
        self._nbytes, self._make = nbytes, make
        self._bytes: bytes | None = None

    def __len__(self) -> int:
        return self._nbytes

    def resolve(self) -> bytes:
        """The content (computed once)."""
        if self._bytes is None:
            content, self._make = self._make(), None
            if len(content) != self._nbytes:
                raise RuntimeError(f"deferred payload announced {self._nbytes} bytes, made "
                                   f"{len(content)}")
            self._bytes = content
        return self._bytes


def payload_bytes(payload: bytes | DeferredPayload) -> bytes:
    """The content of a payload, computing it if it was deferred."""
    return payload.resolve() if isinstance(payload, DeferredPayload) else payload
