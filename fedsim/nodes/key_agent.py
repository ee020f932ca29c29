"""The key agent process: answers clients' key requests over their links."""

from __future__ import annotations

from collections.abc import Callable

import simpy

from fedsim.message import Message
from fedsim.nodes.router import Router


class KeyAgent:
    """A trusted third party that hands every client the run's key material.

    ``key_payload(client_name)`` returns the bytes sent in the ``key`` message: serialized keys,
    or a short key seed when keys are derived on the client (delivery over a secure channel is
    assumed; the bytes still cost simulated time on the links).
    """

    name = "key_agent"

    def __init__(self, env: simpy.Environment, router: Router, inbox: simpy.FilterStore,
                 key_payload: Callable[[str], bytes], layout: bytes | None = None):
        self.env, self.router, self.inbox = env, router, inbox
        self._key_payload = key_payload
        self._layout = layout  # the encrypted model's public structure, published to the server

    def run(self):
        """Publish the layout (if any) to the server, then serve key requests forever."""
        if self._layout is not None:
            self.router.send(Message("keynet_layout", self.name, "server", 0, self._layout))
        while True:
            req = yield self.inbox.get()
            if req.kind == "key_request":
                self.router.send(Message("key", self.name, req.src, req.round,
                                         self._key_payload(req.src)))
