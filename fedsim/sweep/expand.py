"""Expansion of a scenario's ``sweep:`` block into runs with stable ids.

A sweep key is a dotted path into the scenario document. A top-level path (``seed``,
``network.clients.uplink_bps``) changes the shared base, so every scheme gets it; a path under
``schemes.<name>.`` changes only that scheme. ``grid`` keys form a Cartesian product; ``zip``
keys advance together (one point per list position) and multiply the grid. Every point is then
combined with every scheme of the file.

A run's id is a hash of its fully resolved :class:`~fedsim.config.RunConfig`, so it does not
depend on the order of the grid, on file formatting, or on which sweep produced it; two points
that resolve to the same config are one run.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsim.config import RunConfig
from fedsim.scenario import ScenarioError, build_scenario, has_path, load_document

#: Length of a run id in hex digits (48 bits: collisions are negligible for any real sweep).
RUN_ID_DIGITS = 12


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep.

    Attributes
    ----------
    run_id : str
        Hash of the resolved config (:func:`run_id`).
    config : RunConfig
        The validated config of this run.
    swept : dict
        Swept key -> value for the keys that apply to this run (a ``schemes.<name>.`` key
        applies only to that scheme).
    """

    run_id: str
    config: RunConfig
    swept: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sweep:
    """An expanded sweep: its runs in a deterministic order and the swept keys."""

    name: str
    source: str
    keys: list[str]
    runs: list[SweepRun]
    document: dict[str, Any]


def run_id(cfg: RunConfig) -> str:
    """Stable id of a run: the first :data:`RUN_ID_DIGITS` hex digits of the SHA-256 of its
    resolved config as canonical JSON (sorted keys)."""
    text = json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:RUN_ID_DIGITS]


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> Sweep:
    """Read a scenario file (with ``--set`` overrides) and expand its sweep.

    A file without a ``sweep:`` block gives one run per scheme.

    Raises
    ------
    ScenarioError
        One line naming the key, for a malformed file or a grid point that fails validation.
    """
    return expand(load_document(path, overrides), str(path))


def expand(doc: dict[str, Any], src: str) -> Sweep:
    """Expand a parsed scenario document into its runs (see the module docstring)."""
    base = build_scenario(doc, src)  # validates the file itself, including the sweep's shape
    sweep = doc.get("sweep") or {}
    grid, zipped = sweep.get("grid") or {}, sweep.get("zip") or {}
    keys = list(grid) + list(zipped)
    schemes = list(doc.get("schemes") or {"fedavg": {}})
    for key in keys:
        _check_key(key, doc, schemes, src)
    zip_points = [dict(zip(zipped, vals)) for vals in zip(*zipped.values())] or [{}]
    grid_points = [dict(zip(grid, vals)) for vals in itertools.product(*grid.values())]
    runs: dict[str, SweepRun] = {}
    for gp in grid_points:
        for zp in zip_points:
            point = {**gp, **zp}
            for cfg in _point_configs(doc, point, src):
                swept = {k: v for k, v in point.items() if _applies(k, cfg.scheme)}
                rid = run_id(cfg)
                runs.setdefault(rid, SweepRun(rid, cfg, swept))
    return Sweep(base.name, src, keys, list(runs.values()), doc)


def _point_configs(doc: dict[str, Any], point: dict[str, Any], src: str) -> list[RunConfig]:
    d = copy.deepcopy({k: v for k, v in doc.items() if k != "sweep"})
    for key, value in point.items():
        _set(d, key.split("."), value)
    try:
        return build_scenario(d, src).runs
    except ScenarioError as exc:
        where = ", ".join(f"{k}={v!r}" for k, v in point.items())
        raise ScenarioError(f"{exc} [sweep point {where}]") from None


def _set(doc: dict[str, Any], parts: list[str], value: Any) -> None:
    node = doc
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = copy.deepcopy(value)


def _applies(key: str, scheme: str) -> bool:
    parts = key.split(".")
    return parts[0] != "schemes" or (len(parts) > 1 and parts[1] == scheme)


def _check_key(key: str, doc: dict[str, Any], schemes: list[str], src: str) -> None:
    parts = key.split(".")
    if parts[0] == "schemes":
        if len(parts) < 3 or parts[1] not in schemes:
            raise ScenarioError(f"{src}: sweep.{key}: expected schemes.<one of "
                                f"{', '.join(schemes)}>.<key>")
        return
    if parts[0] == "scheme":
        raise ScenarioError(f"{src}: sweep.{key}: schemes are listed under schemes:, not swept")
    for name, override in (doc.get("schemes") or {}).items():
        if has_path(override or {}, parts):
            raise ScenarioError(f"{src}: sweep.{key}: scheme {name} also sets it, so the sweep "
                                f"would not apply (sweep schemes.{name}.{key} instead)")
