"""The registered clients: each one's SimPy process, links, inbox and training job, built when the
server first selects it (lazy) or all at start-up (eager).

A never-selected client costs only what the engine drew for it up front: its partition indices,
its link parameters and its device speed. Lazily built clients join the simulation at the moment
the server announces their first round, before any message is sent to them, so they receive
exactly the messages, at exactly the times, that eagerly built clients would: the tables are the
same either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import simpy
import torch

from fedsim.network import Link
from fedsim.nodes.client import Client
from fedsim.nodes.key_agent import KeyAgent
from fedsim.nodes.router import Router
from fedsim.nodes.server import Server, client_name
from fedsim.trainers import ClientJob, LocalWork


class Population:
    """Builds clients on demand and tells the trainer each round's cohort.

    ``make_client(cid, inbox)`` returns the client's :class:`Client`; ``work(cid)`` its local
    work; ``jobs`` is the trainer's job table, filled here as clients are built. Link
    parameters: ``ups``/``downs`` in bit/s, ``lats`` in seconds, indexed by client id.
    """

    def __init__(self, env: simpy.Environment, router: Router, parts: Sequence[np.ndarray],
                 ups: np.ndarray, downs: np.ndarray, lats: np.ndarray,
                 server_links: tuple[Link, Link, Link, Link],
                 make_client: Callable[[int, simpy.FilterStore], Client],
                 work: Callable[[int], LocalWork], jobs: dict[int, ClientJob],
                 on_cohort: Callable[[int, Sequence[int]], None]):
        self.env, self.router, self.parts = env, router, parts
        self._ups, self._downs, self._lats = ups, downs, lats
        self._server_links = server_links  # server ingress, egress, key agent in, out
        self._make_client, self._work = make_client, work
        self.jobs, self._on_cohort = jobs, on_cohort

    def build(self, cids: Iterable[int]) -> None:
        """Build the clients of ``cids`` not built yet (in the given order) and start them."""
        ingress, egress, ka_in, ka_out = self._server_links
        for cid in cids:
            if cid in self.jobs:
                continue
            self.jobs[cid] = ClientJob(torch.as_tensor(self.parts[cid], dtype=torch.long),
                                       self._work(cid))
            name = client_name(cid)
            inbox = self.router.add_node(name)
            up = Link(f"{name}:up", float(self._ups[cid]), float(self._lats[cid]))
            down = Link(f"{name}:down", float(self._downs[cid]), float(self._lats[cid]))
            self.router.connect(name, Server.name, [up, ingress])
            self.router.connect(Server.name, name, [egress, down])
            self.router.connect(name, KeyAgent.name, [up, ka_in])
            self.router.connect(KeyAgent.name, name, [ka_out, down])
            self.env.process(self._make_client(cid, inbox).run())

    def dispatch(self, rnd: int, cids: list[int]) -> None:
        """Server hook: round ``rnd`` goes to ``cids`` (slot order); build them, tell the trainer."""
        self.build(cids)
        self._on_cohort(rnd, cids)
