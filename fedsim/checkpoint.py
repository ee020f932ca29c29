"""Checkpoints at round boundaries, so a killed run resumes with identical tables.

What is saved is the SimPy-independent state at the end of a round: the server's global wire
vector (float32 bytes), its selection RNG state, the simulated clock, the recorder's rows and
the evaluations so far; a finished scheme is saved whole (its tables as Parquet). Each file is a
checked cache file (:mod:`fedsim.cachefile`, keyed by the run config's hash), written atomically.

Resuming is exact only where nothing else carries state across rounds, so checkpoints are
limited (:func:`check_resumable`) to runs without encryption, ENN, attacks, deadline or
overcommit: then, at a round's end, every message has arrived and every client is idle.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fedsim.cachefile import read_cache, write_cache
from fedsim.config import RunConfig

_TABLES = ("rounds", "clients", "messages", "histogram", "attacks")


def check_resumable(cfg: RunConfig) -> None:
    """Raise ValueError naming what a checkpoint of ``cfg`` could not restore exactly."""
    why = [what for what, bad in (
        ("encryption", not cfg.encryption.resumable),
        (f"codec {cfg.codec.kind}", not cfg.codec.resumable),
        ("attack", cfg.attack is not None),
        ("selection.deadline_s", cfg.selection.deadline_s is not None),
        ("selection.overcommit > 1", cfg.selection.overcommit != 1.0),
        ("aggregation.mode async", cfg.aggregation.mode == "async")) if bad]
    if why:
        raise ValueError(f"scheme {cfg.scheme!r} uses {', '.join(why)}; checkpoints support plain "
                         "runs without these (run it without --checkpoint-every)")


@dataclass(frozen=True)
class Checkpointer:
    """Writes (every ``every`` rounds) and reads the checkpoints of a scenario in ``folder``."""

    folder: Path
    every: int

    def _path(self, cfg: RunConfig, stage: str) -> Path:
        return self.folder / f"{cfg.scheme}-seed{cfg.seed}.{stage}"

    @staticmethod
    def _key(cfg: RunConfig) -> str:
        return hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()

    def save_round(self, cfg: RunConfig, rnd: int, now_s: float, server: Any, recorder: Any,
                   evals: dict[int, tuple[float, float, float]]) -> None:
        """Save the state at the end of round ``rnd`` if it is a checkpoint round."""
        if not self.every or rnd % self.every or rnd >= cfg.rounds:
            return
        wire = server.global_wire.detach().cpu().numpy().astype(np.float32)
        state = {"round": rnd, "now_s": now_s, "policy": server.policy.state(),
                 "wire": base64.b64encode(wire.tobytes()).decode(),
                 "recorder": {"rounds": recorder.rounds, "clients": recorder.clients,
                              "messages": recorder.messages,
                              "aggregated": sorted(recorder.aggregated),
                              "outcomes": [[r, c, o] for (r, c), o in recorder.outcomes.items()]},
                 "evals": {str(k): v for k, v in evals.items()}}
        payload = json.dumps(state, default=_plain).encode()
        write_cache(self._path(cfg, "round"), "checkpoint", self._key(cfg), payload)

    def load_round(self, cfg: RunConfig) -> dict[str, Any] | None:
        """The last saved round state of ``cfg`` (``now_s`` is its simulated clock), or None."""
        payload = read_cache(self._path(cfg, "round"), "checkpoint", self._key(cfg))
        return None if payload is None else json.loads(payload)

    @staticmethod
    def restore(state: dict[str, Any], server: Any, recorder: Any
                ) -> dict[int, tuple[float, float, float]]:
        """Put a saved round state into a freshly built server and recorder; the evaluations."""
        wire = np.frombuffer(base64.b64decode(state["wire"]), dtype=np.float32).copy()
        server.global_wire = torch.from_numpy(wire)
        server.policy.restore(state["policy"])
        server.first_round = state["round"] + 1
        rec = state["recorder"]
        recorder.rounds[:], recorder.clients[:], recorder.messages[:] = (
            rec["rounds"], rec["clients"], rec["messages"])
        recorder.aggregated = {tuple(x) for x in rec["aggregated"]}
        recorder.outcomes = {(r, c): o for r, c, o in rec["outcomes"]}
        return {int(k): tuple(v) for k, v in state["evals"].items()}

    def save_done(self, result: Any) -> None:
        """Save a finished scheme's tables (it is not simulated again on resume)."""
        tables = {}
        for name in _TABLES:
            buf = io.BytesIO()
            getattr(result, name).to_parquet(buf, index=False)
            tables[name] = base64.b64encode(buf.getvalue()).decode()
        payload = json.dumps({"tables": tables, "info": result.info,
                              "files": {k: base64.b64encode(v).decode()
                                        for k, v in result.files.items()}}, default=_plain)
        write_cache(self._path(result.config, "done"), "checkpoint", self._key(result.config),
                    payload.encode())

    def load_done(self, cfg: RunConfig) -> dict[str, Any] | None:
        """A finished scheme's tables, info and files (RunResult fields), or None."""
        payload = read_cache(self._path(cfg, "done"), "checkpoint", self._key(cfg))
        if payload is None:
            return None
        doc = json.loads(payload)
        fields: dict[str, Any] = {name: pd.read_parquet(io.BytesIO(base64.b64decode(data)))
                                  for name, data in doc["tables"].items()}
        fields["files"] = {k: base64.b64decode(v) for k, v in doc["files"].items()}
        return {**fields, "info": doc["info"]}

    def clear(self) -> None:
        """Remove the checkpoint files (and the folder, if nothing else is in it)."""
        for pattern in ("*.round", "*.done", ".*.tmp"):
            for path in self.folder.glob(pattern):
                path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.folder.rmdir()


def _plain(value: Any) -> Any:
    """JSON for numpy scalars (rows hold them), keeping ints as ints."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot checkpoint {type(value).__name__}")
