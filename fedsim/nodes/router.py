"""Router: names nodes, knows each (src, dst) path of links, and delivers messages into inboxes."""

from __future__ import annotations

from collections.abc import Sequence

import simpy

from fedsim.message import Message
from fedsim.network import Link, Network


class Router:
    """Delivers a message to its destination's inbox when it arrives over its path."""

    def __init__(self, env: simpy.Environment, network: Network):
        self.env = env
        self.network = network
        self._paths: dict[tuple[str, str], tuple[Link, ...]] = {}
        self._inboxes: dict[str, simpy.FilterStore] = {}

    def add_node(self, name: str) -> simpy.FilterStore:
        """Register node ``name``; returns its inbox (``get(accept)`` takes the first message
        ``accept`` takes, in arrival order, leaving the others)."""
        if name in self._inboxes:
            raise ValueError(f"node {name!r} exists")
        self._inboxes[name] = simpy.FilterStore(self.env)
        return self._inboxes[name]

    def connect(self, src: str, dst: str, path: Sequence[Link]) -> None:
        """Messages from ``src`` to ``dst`` travel over ``path``."""
        self._paths[(src, dst)] = tuple(path)

    def path(self, src: str, dst: str) -> tuple[Link, ...]:
        return self._paths[(src, dst)]

    def send(self, msg: Message) -> simpy.Event:
        """Send ``msg``; the returned event fires with it on arrival (then it is in the inbox)."""
        try:
            path = self._paths[(msg.src, msg.dst)]
        except KeyError:
            raise ValueError(f"no route from {msg.src!r} to {msg.dst!r}") from None
        msg.meta["t_send"] = self.env.now
        arrival = self.network.send(msg, path)
        arrival.callbacks.append(lambda ev: self._inboxes[msg.dst].put(ev.value))
        return arrival

    def cancel(self, arrival: simpy.Event) -> int | None:
        """Abort the message whose arrival event is ``arrival``: the bytes it had sent, or None
        if its last byte had already left (it will arrive)."""
        return self.network.cancel(arrival)

    def signal(self, msg: Message) -> None:
        """Deliver a zero-cost control signal at once (e.g. a dropped connection), bypassing links."""
        self._inboxes[msg.dst].put(msg)
