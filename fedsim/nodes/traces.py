"""Client online sessions over simulated time: read from a trace file, or generated (diurnal).

A trace gives each client a sorted list of ``[start, end)`` online intervals in simulated
seconds (FedScale's client-behaviour traces hold the same sessions as parallel ``active`` /
``inactive`` lists; both shapes are read). File format (YAML or JSON; docs/schemes.md)::

    period_s: 600            # optional: the pattern repeats; intervals lie within [0, period_s]
    clients:
      "0": [[0, 120.5], [300, 420]]
      "1": {active: [0, 300], inactive: [120, 420]}

Every client of the run (ids ``0..N-1``) must be listed; other ids are ignored.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fedsim.data.base import DataError

Sessions = tuple[tuple[float, float], ...]


class TraceError(DataError):
    """An availability trace cannot be read; the message names the file and the client."""


@dataclass(frozen=True)
class OnlineTrace:
    """Each client's online sessions ``[start, end)`` in simulated seconds (sorted, disjoint,
    touching sessions merged), optionally repeating every ``period_s`` seconds."""

    sessions: Mapping[int, Sessions]
    period_s: float | None = None

    def online_until(self, cid: int, t_s: float) -> float:
        """When the session of client ``cid`` that holds time ``t_s`` ends (seconds).

        ``t_s`` itself if the client is offline at ``t_s``; ``inf`` if it never goes offline.
        """
        ivs = self.sessions[cid]
        period = self.period_s
        base = 0.0 if period is None else math.floor(t_s / period) * period
        local = t_s - base
        i = bisect.bisect_right([s for s, _ in ivs], local) - 1
        if i < 0 or local >= ivs[i][1]:
            return t_s
        end = ivs[i][1]
        if period is not None and end >= period and ivs[0][0] <= 0.0:  # runs into the next period
            return math.inf if ivs[0][1] >= period else base + period + ivs[0][1]
        return base + end

    def to_json(self) -> str:
        """The trace in fedsim's file format (JSON)."""
        doc: dict[str, Any] = {} if self.period_s is None else {"period_s": self.period_s}
        doc["clients"] = {str(c): [list(iv) for iv in ivs] for c, ivs in sorted(self.sessions.items())}
        return json.dumps(doc, indent=None, separators=(",", ":")).replace("],\"", "],\n\"")


def diurnal(num_clients: int, period_s: float, online_fraction: float,
            rng: np.random.Generator) -> OnlineTrace:
    """One session of ``online_fraction * period_s`` seconds per period per client, starting at
    a phase drawn uniformly in ``[0, period_s)`` (a session crossing the period's end wraps)."""
    length = online_fraction * period_s
    phases = rng.uniform(0.0, period_s, size=num_clients)
    sessions = {}
    for cid, phase in enumerate(phases.tolist()):
        if online_fraction >= 1:
            ivs = ((0.0, period_s),)
        elif phase + length <= period_s:
            ivs = ((phase, phase + length),)
        else:
            ivs = ((0.0, phase + length - period_s), (phase, period_s))
        sessions[cid] = ivs
    return OnlineTrace(sessions, period_s)


def load_trace(path: str | Path, num_clients: int) -> OnlineTrace:
    """Read and validate a trace file for a run of ``num_clients`` clients."""
    where = f"availability.trace {path}"
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise TraceError(f"{where}: cannot read ({exc.strerror})") from None
    try:
        doc = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise TraceError(f"{where}: not valid {'JSON' if str(path).endswith('.json') else 'YAML'}"
                         f" ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("clients"), dict):
        raise TraceError(f"{where}: expected a mapping with a 'clients' mapping")
    unknown = set(doc) - {"clients", "period_s"}
    if unknown:
        raise TraceError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    period = doc.get("period_s")
    if period is not None and not (_number(period) and 0 < period < math.inf):
        raise TraceError(f"{where}: period_s must be a positive number, got {period!r}")
    clients = {str(k): v for k, v in doc["clients"].items()}
    sessions = {}
    for cid in range(num_clients):
        if str(cid) not in clients:
            raise TraceError(f"{where}: client {cid} missing (the run has clients 0.."
                             f"{num_clients - 1})")
        sessions[cid] = _sessions(clients[str(cid)], period, f"{where}: client {cid}")
    return OnlineTrace(sessions, period)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _sessions(entry: Any, period: float | None, where: str) -> Sessions:
    """A client's intervals, checked (finite, 0 <= start < end <= period, in order) and merged."""
    if isinstance(entry, dict):  # FedScale's shape
        active, inactive = entry.get("active"), entry.get("inactive")
        if not (isinstance(active, list) and isinstance(inactive, list)
                and len(active) == len(inactive)):
            raise TraceError(f"{where}: needs 'active' and 'inactive' lists of equal length")
        entry = [list(pair) for pair in zip(active, inactive)]
    if not isinstance(entry, list):
        raise TraceError(f"{where}: expected a list of [start, end] intervals")
    out: list[tuple[float, float]] = []
    for iv in entry:
        if not (isinstance(iv, list) and len(iv) == 2 and all(map(_number, iv))):
            raise TraceError(f"{where}: interval {iv!r} is not [start, end] in seconds")
        start, end = float(iv[0]), float(iv[1])
        if not 0 <= start < end:
            raise TraceError(f"{where}: interval [{start}, {end}] needs 0 <= start < end")
        if period is not None and end > period:
            raise TraceError(f"{where}: interval [{start}, {end}] ends after period_s ({period})")
        if out and start < out[-1][1]:
            raise TraceError(f"{where}: interval [{start}, {end}] starts before the previous one "
                             f"ends ({out[-1][1]}); list intervals in order, without overlap")
        if out and start == out[-1][1]:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return tuple(out)
