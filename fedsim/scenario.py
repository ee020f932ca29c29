"""Scenario files: YAML -> validated run configs, one per compared scheme.

A scenario file holds the fields of :class:`fedsim.config.RunConfig` (the shared base) plus
``name``, ``description`` and ``schemes``: a mapping from scheme name to the keys that scheme
changes. Every scheme runs on the same seed, data partition and network unless it overrides them.
Two more meta keys are read by other front ends and only shape-checked here: ``sweep`` (``grid``
and ``zip`` mappings from a dotted key to a list of values; see :mod:`fedsim.sweep`) and
``reference`` (published numbers shown beside fedsim's by :mod:`analysis`).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fedsim import plugins  # noqa: F401 (the built-in kinds a scenario may name)
from fedsim.config import RunConfig

_META_KEYS = ("name", "description", "schemes", "sweep", "reference")
_SCHEME_NAME = re.compile(r"^[A-Za-z0-9_.+\-]+$")
#: Scenario names become a folder under results/, so they may not hold a path.
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-]{0,99}$")


#: Deepest nesting of mappings and lists a scenario may have (real ones use about 5).
MAX_DEPTH = 32


class ScenarioError(ValueError):
    """A scenario file or override is invalid; the message is one line naming where and what."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects a key given twice in one mapping (YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            if isinstance(key, (str, int, float, bool)) or key is None:
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` that also rejects duplicate keys and nesting deeper than MAX_DEPTH.

    Raises :class:`yaml.YAMLError`, or :class:`ValueError` for too deep a nesting.
    """
    if _flow_depth(text) > MAX_DEPTH:  # PyYAML's scanner is quadratic in flow nesting depth
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    todo = [(doc, 0)]
    while todo:
        node, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        todo.extend((c, depth + 1) for c in children)
    return doc


@dataclass(frozen=True)
class Scenario:
    """A loaded scenario: its runs (one per scheme) and the resolved document."""

    name: str
    description: str
    source: str
    runs: list[RunConfig]
    resolved: dict[str, Any] = field(repr=False)


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> Scenario:
    """Read, override (``key.path=value`` strings) and validate a scenario file."""
    return build_scenario(load_document(path, overrides), str(path))


def load_document(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """A scenario file as a parsed mapping with its ``--set`` overrides applied (not validated):
    what :func:`load_scenario` and :func:`fedsim.sweep.load_sweep` build from."""
    doc = read_yaml(str(path))
    for item in overrides or []:
        apply_override(doc, item)
    return doc


def read_yaml(src: str) -> dict[str, Any]:
    """Parse a YAML mapping, turning every failure into a one-line :class:`ScenarioError`."""
    p = Path(src)
    if not p.is_file():
        raise ScenarioError(f"{src}: no such scenario file")
    try:
        doc = parse_yaml(p.read_text())
    except OSError as exc:
        raise ScenarioError(f"{src}: cannot read the file: {exc.strerror}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ScenarioError(f"{src}: YAML syntax error{where}: {exc.problem}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{src}: cannot parse YAML: {exc}") from None
    except ValueError as exc:
        raise ScenarioError(f"{src}: {exc}") from None
    if doc is None:
        raise ScenarioError(f"{src}: file is empty")
    if not isinstance(doc, dict):
        raise ScenarioError(f"{src}: top level must be a mapping of keys, got {type(doc).__name__}")
    return doc


def _flow_depth(text: str) -> int:
    """Deepest ``[``/``{`` nesting on any top-level entry (quotes and comments skipped)."""
    deepest = depth = 0
    quote = ""
    for line in text.splitlines():
        if line[:1] not in ("", " ", "\t", "]", "}"):
            depth, quote = 0, ""  # a new top-level key: an unclosed bracket was plain text
        for ch in line:
            if quote:
                quote = "" if ch == quote else quote
            elif ch in "'\"":
                quote = ch
            elif ch == "#":
                break
            elif ch in "[{":
                depth += 1
                deepest = max(deepest, depth)
            elif ch in "]}":
                depth = max(depth - 1, 0)
    return deepest


def apply_override(doc: dict[str, Any], item: str) -> None:
    """Apply one ``--set a.b.c=value`` override in place (value parsed as YAML)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ScenarioError(f"--set {item!r}: expected KEY.PATH=VALUE")
    try:
        value = parse_yaml(text)
    except (yaml.YAMLError, ValueError) as exc:
        why = exc if isinstance(exc, ValueError) else "value is not valid YAML"
        raise ScenarioError(f"--set {item!r}: {why}") from None
    parts = key.strip().split(".")
    node = doc
    for i, part in enumerate(parts[:-1]):
        nxt = node.setdefault(part, {})
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            where = ".".join(parts[: i + 1])
            raise ScenarioError(f"--set {item!r}: {where} is a value, not a section")
        node = nxt
    node[parts[-1]] = value


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base``.

    Sections with a different ``kind`` (e.g. switching the codec) are replaced, not merged.
    """
    out = copy.deepcopy(base)
    for key, value in override.items():
        old = out.get(key)
        if (isinstance(old, dict) and isinstance(value, dict)
                and old.get("kind", value.get("kind")) == value.get("kind", old.get("kind"))):
            out[key] = merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def build_scenario(doc: dict[str, Any], src: str) -> Scenario:
    """Validate a parsed scenario document into one :class:`RunConfig` per scheme."""
    name = doc.get("name", Path(src).stem)
    if not isinstance(name, str) or not _PLAIN_NAME.match(name):
        raise ScenarioError(f"{src}: name: must be a plain name of letters, digits, _ . + - "
                            f"(no path, not starting with . or -; got {name!r})")
    description = doc.get("description", "")
    check_sweep(doc.get("sweep"), src)
    if not isinstance(doc.get("reference", {}), dict):
        raise ScenarioError(f"{src}: reference: must be a mapping")
    schemes = doc.get("schemes") or {"fedavg": {}}
    if not isinstance(schemes, dict):
        raise ScenarioError(f"{src}: schemes: must be a mapping from scheme name to overrides")
    base = {k: v for k, v in doc.items() if k not in _META_KEYS}
    runs, resolved = [], {}
    for scheme, override in schemes.items():
        if not isinstance(scheme, str) or not _SCHEME_NAME.match(scheme):
            raise ScenarioError(f"{src}: schemes.{scheme}: scheme names use letters, digits, _ . + -")
        override = override or {}
        if not isinstance(override, dict):
            raise ScenarioError(f"{src}: schemes.{scheme}: must be a mapping of overrides")
        if "scheme" in override or "scheme" in base:
            raise ScenarioError(f"{src}: scheme: set by the schemes mapping, not as a key")
        merged = merge(base, override)
        merged["scheme"] = scheme
        try:
            run = RunConfig.model_validate(merged)
        except ValidationError as exc:
            raise ScenarioError(_describe(exc, src, merged, override, scheme)) from None
        runs.append(run)
        resolved[scheme] = run.model_dump(mode="json")
    return Scenario(name, description, src, runs,
                    {"name": name, "description": description, "runs": resolved})


def check_sweep(sweep: Any, src: str) -> None:
    """Check the shape of a ``sweep:`` block (values are validated per run when it expands).

    ``grid`` and ``zip`` map dotted keys to non-empty lists; ``zip`` lists have equal lengths.
    """
    if sweep is None:
        return
    if not isinstance(sweep, dict):
        raise ScenarioError(f"{src}: sweep: must be a mapping with grid and/or zip")
    for part in sweep:
        if part not in ("grid", "zip"):
            raise ScenarioError(f"{src}: sweep.{part}: unknown key (use grid and zip)")
    lengths = {}
    for part in ("grid", "zip"):
        block = sweep.get(part) or {}
        if not isinstance(block, dict):
            raise ScenarioError(f"{src}: sweep.{part}: must map dotted keys to lists of values")
        for key, values in block.items():
            if not isinstance(key, str) or key in _META_KEYS or not key:
                raise ScenarioError(f"{src}: sweep.{part}.{key}: cannot sweep this key")
            if not isinstance(values, list) or not values:
                raise ScenarioError(f"{src}: sweep.{part}.{key}: must be a non-empty list")
            if part == "zip":
                lengths[key] = len(values)
        both = set(block) & set((sweep.get("grid") or {}) if part == "zip" else {})
        if both:
            raise ScenarioError(f"{src}: sweep.zip.{min(both)}: also in sweep.grid")
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise ScenarioError(f"{src}: sweep.zip: lists must have equal lengths ({desc})")


def _describe(exc: ValidationError, src: str, merged: dict, override: dict, scheme: str) -> str:
    err = exc.errors()[0]
    path = _input_path(err["loc"], merged, err["type"])
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):  # e.g. codec.kind
        path.append(err["ctx"]["discriminator"].strip("'"))
    dotted = ".".join(str(p) for p in path) or "(top level)"
    parent = path[:-1]  # a missing key is the scheme's fault if the scheme supplied its section
    if has_path(override, path) or (err["type"] in ("missing", "union_tag_not_found")
                                     and has_path(override, parent)
                                     and _node(override, parent) == _node(merged, parent)):
        dotted = f"schemes.{scheme}.{dotted}"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] in ("missing", "union_tag_not_found"):
        msg = "required key is missing"
    elif err["type"] == "union_tag_invalid":
        msg = f"unknown kind {err['ctx']['tag']!r}; expected one of {err['ctx']['expected_tags']}"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    got = "" if err["type"] in ("extra_forbidden", "missing") or isinstance(err.get("input"), dict) \
        else f" (got {err.get('input')!r})"
    return f"{src}: {dotted}: {msg}{got}"


def _input_path(loc: tuple, doc: Any, err_type: str) -> list:
    """The part of pydantic's error location that names keys of the input (drops union tags)."""
    path, node = [], doc
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node or isinstance(node, list) and isinstance(part, int) and part < len(node):
            path.append(part)
            node = node[part]
        elif i == len(loc) - 1 and err_type in ("missing", "extra_forbidden"):
            path.append(part)
    return path


def _node(doc: Any, path: list) -> Any:
    """The value at ``path`` of a document known to contain it."""
    for part in path:
        doc = doc[part]
    return doc


def has_path(doc: Any, path: list) -> bool:
    """Whether the nested mappings of ``doc`` hold the (non-empty) key path ``path``."""
    node = doc
    for part in path:
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    return bool(path)
