"""Recorder: collects long-format rows where events happen and turns them into pandas tables."""

from __future__ import annotations

from collections import deque
from typing import Any

import pandas as pd

from fedsim.message import Message
from fedsim.network import Link

#: Which bytes column of the rounds table each message kind counts towards.
BYTES_COLUMN = {
    "model_down": "bytes_down",
    "codec_setup": "bytes_down",
    "codec_round": "bytes_down",
    "init_plain": "bytes_down",
    "update_up": "bytes_up",
    "model_init": "bytes_up",
    "key_request": "bytes_keys",
    "keynet_layout": "bytes_keys",
    "key": "bytes_keys",
    # secure aggregation: its masked updates are uploads, its key and share traffic is key traffic
    "masked_update": "bytes_up",
    "sa_advertise": "bytes_keys",
    "sa_keys": "bytes_keys",
    "sa_shares": "bytes_keys",
    "sa_routed": "bytes_keys",
    "sa_unmask": "bytes_keys",
    "sa_reveal": "bytes_keys",
    "sa_abort": "bytes_keys",
}


class Recorder:
    """Rows of the ``rounds``, ``clients`` and ``messages`` tables of one run.

    The server pushes each new global model (a flat wire vector) to :attr:`snapshots`; the engine
    evaluates them outside the simulation, so evaluation never needs keys inside a process.
    """

    def __init__(self) -> None:
        self.rounds: list[dict[str, Any]] = []
        self.clients: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.snapshots: deque[tuple[int, Any]] = deque()
        self.aggregated: set[tuple[int, int]] = set()  # (round, client) whose update was used
        # async: (round dispatched, client) -> the round (aggregation) that used the update
        self.applied: dict[tuple[int, int], int] = {}
        # (round, client) -> what its training and encoding measured (loss, codec metrics, ...)
        self.outcomes: dict[tuple[int, int], dict[str, Any]] = {}

    def on_arrival(self, msg: Message, path: tuple[Link, ...], t_send: float, t_arrive: float) -> None:
        """Network observer: one row per delivered message."""
        self.messages.append({
            "round": msg.round, "t_send": t_send, "t_arrive": t_arrive, "src": msg.src,
            "dst": msg.dst, "kind": msg.kind, "bytes": msg.nbytes, "status": "delivered",
        })

    def on_abort(self, msg: Message, path: tuple[Link, ...], t_send: float, t_abort: float,
                 nbytes_sent: int) -> None:
        """Network observer: one row per aborted message, with the bytes it had sent
        (``t_arrive`` holds the time of the abort)."""
        self.messages.append({
            "round": msg.round, "t_send": t_send, "t_arrive": t_abort, "src": msg.src,
            "dst": msg.dst, "kind": msg.kind, "bytes": nbytes_sent, "status": "aborted",
        })

    def messages_frame(self) -> pd.DataFrame:
        cols = ["round", "t_send", "t_arrive", "src", "dst", "kind", "bytes", "status"]
        return pd.DataFrame(self.messages, columns=cols)

    def bytes_by_round(self) -> pd.DataFrame:
        """Bytes per round and column (bytes_down, bytes_up, bytes_keys): delivered messages and
        the bytes aborted ones had sent."""
        msgs = self.messages_frame()
        msgs["column"] = msgs["kind"].map(BYTES_COLUMN)
        table = msgs.pivot_table(index="round", columns="column", values="bytes", aggfunc="sum",
                                 fill_value=0)
        return table.reindex(columns=["bytes_down", "bytes_up", "bytes_keys"], fill_value=0)
