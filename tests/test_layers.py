"""fedsim's import layers (docs/ARCHITECTURE.md): no circles, no import that runs up, few levels.

Every module under ``fedsim/`` is parsed with :mod:`ast`. Every import of a fedsim module counts,
wherever it stands: at the top, inside a function (a lazy import still runs, only later) and
under ``if TYPE_CHECKING:`` (a type a module names is something it depends on; hiding the import
from the interpreter does not remove that dependency). ``import fedsim.a.b`` and
``from fedsim.a.b import x`` depend on ``fedsim.a.b`` (or on ``fedsim.a.b.x`` when ``x`` is a
module) and, for an importer outside package ``fedsim.a``, on ``fedsim.a`` too, because Python
runs ``fedsim/a/__init__.py`` first. A package's ``__init__`` is the module ``fedsim.a``.

:data:`LAYERS` is the map, bottom up. A module belongs to the entry that is the longest dotted
prefix of its name (``fedsim.attacks.attacker`` is in the harness, the rest of
``fedsim.attacks`` in the transforms). A module may import its own layer and those below it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The layer map, bottom up: (name, dotted prefixes of the modules it holds).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("settings", ("fedsim.config",)),
    ("wire, seeds & files", ("fedsim.message", "fedsim.wire", "fedsim.rng", "fedsim.devices",
                             "fedsim.cachefile", "fedsim.outdir")),
    ("learning", ("fedsim.data", "fedsim.models", "fedsim.flops", "fedsim.training",
                  "fedsim.placement", "fedsim.trainers", "fedsim.ray_backend")),
    ("transforms", ("fedsim.domain", "fedsim.codecs", "fedsim.keynet", "fedsim.enn", "fedsim.privacy",
                    "fedsim.secagg",
                    "fedsim.attacks")),
    ("SimPy processes", ("fedsim.network", "fedsim.nodes", "fedsim.recorder")),
    ("harness", ("fedsim.engine", "fedsim.hooks", "fedsim.encryption", "fedsim.keynet.setup",
                 "fedsim.attacks.attacker", "fedsim.attacks.adversaries", "fedsim.plugins", "fedsim.checkpoint", "fedsim.results",
                 "fedsim.enn.fidelity")),
    ("front ends", ("fedsim.scenario", "fedsim.cli", "fedsim.sweep", "fedsim.attacks.cli",
                    "fedsim.enn.cli")),
)
MAX_LEVELS = 8
#: Top-level code that may use fedsim but that fedsim never imports.
OUTSIDE = ("analysis", "benchmarks", "tests", "run_scenario", "conftest")

Graph = Mapping[str, Mapping[str, str]]  # module -> {imported module: "file:line"}


# -- the checker ------------------------------------------------------------------------------
def find_modules(root: Path, package: str = "fedsim") -> dict[str, Path]:
    """Dotted module name -> source file, for every ``.py`` file under ``root/package``."""
    mods = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def module_graph(root: Path, package: str = "fedsim") -> tuple[dict[str, dict[str, str]], list[str]]:
    """The import graph of ``package`` and the problems found while building it (imports of
    unknown fedsim modules or of :data:`OUTSIDE` code)."""
    mods = find_modules(root, package)
    graph: dict[str, dict[str, str]] = {}
    problems = []
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        here = name if is_pkg else name.rpartition(".")[0]
        deps: dict[str, str] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
            for target in _imported(node, here):
                top = target.partition(".")[0]
                if top in OUTSIDE:
                    problems.append(f"{name} imports {target} ({where}): fedsim never imports "
                                    f"{top}/")
                if top != package:
                    continue
                dep = target if target in mods else target.rpartition(".")[0]
                if dep not in mods:
                    problems.append(f"{name} imports {target}: no such module ({where})")
                    continue
                for mod in (*_packages_run(dep, name), dep):
                    if mod != name:
                        deps.setdefault(mod, where)
        graph[name] = deps
    return graph, problems


def _imported(node: ast.AST, here: str) -> Iterable[str]:
    """Dotted names an import statement imports (``from m import x`` gives ``m.x``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:  # relative: from .x import y, inside package ``here``
            base = here.split(".")[: len(here.split(".")) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        return [f"{module}.{a.name}" for a in node.names]
    return []


def _packages_run(dep: str, importer: str) -> list[str]:
    """Packages whose ``__init__`` importing ``dep`` runs, other than the importer's own."""
    parts = dep.split(".")
    pkgs = [".".join(parts[:i]) for i in range(2, len(parts))]
    return [p for p in pkgs if not (importer == p or importer.startswith(p + "."))]


def layer_of(module: str, layers=LAYERS) -> int | None:
    """Index of the layer whose entry is the longest prefix of ``module`` (None: on no layer)."""
    best, found = -1, None
    for i, (_, prefixes) in enumerate(layers):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, found = len(p), i
    return found


def find_cycles(graph: Graph) -> list[list[str]]:
    """One import circle per strongly connected group of modules (Tarjan), as a closed path
    ``[a, b, ..., a]``; empty when the graph is acyclic."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph.get(v, {}):
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_circle(graph, g) for g in groups]


def _circle(graph: Graph, group: list[str]) -> list[str]:
    """A shortest closed import path through the first module of a strongly connected group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(graph.get(v, {})):
            if w == start:
                return paths[v] + [start]
            if w in members and w not in paths:
                paths[w] = paths[v] + [w]
                todo.append(w)
    raise AssertionError(f"no circle through {start}")


def upward_imports(graph: Graph, layers=LAYERS) -> list[str]:
    """One line per import that runs up the layer map, and per module on no layer."""
    out = []
    for mod in sorted(graph):
        mine = layer_of(mod, layers)
        if mine is None:
            out.append(f"{mod} is on no layer: add it to LAYERS (tests/test_layers.py) and to "
                       "docs/ARCHITECTURE.md")
            continue
        for dep, where in sorted(graph[mod].items()):
            theirs = layer_of(dep, layers)
            if theirs is not None and theirs > mine:
                out.append(f"{mod} (layer {mine}, {layers[mine][0]}) imports {dep} (layer "
                           f"{theirs}, {layers[theirs][0]}) at {where}")
    return out


def levels(graph: Graph) -> dict[str, int]:
    """Each module's level in an acyclic graph: 0 if it imports nothing, else one above the
    highest module it imports."""
    out: dict[str, int] = {}

    def level(v: str) -> int:
        if v not in out:
            out[v] = 1 + max((level(w) for w in graph.get(v, {})), default=-1)
        return out[v]

    for v in graph:
        level(v)
    return out


def entry_graph(graph: Graph, layers=LAYERS) -> dict[str, dict[str, str]]:
    """The graph between the map's entries (``fedsim.keynet``, ``fedsim.keynet.setup``, ...):
    imports inside one entry are dropped."""
    def entry(mod: str) -> str:
        return max((p for _, ps in layers for p in ps if mod == p or mod.startswith(p + ".")),
                   key=len, default=mod)

    out: dict[str, dict[str, str]] = {}
    for mod, deps in graph.items():
        node = out.setdefault(entry(mod), {})
        for dep, where in deps.items():
            if entry(dep) != entry(mod):
                node.setdefault(entry(dep), where)
    return out


# -- fedsim itself -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fedsim_graph() -> dict[str, dict[str, str]]:
    graph, problems = module_graph(ROOT)
    assert not problems, "\n".join(problems)
    return graph


def test_no_import_circles(fedsim_graph):
    cycles = find_cycles(fedsim_graph)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_upward_imports(fedsim_graph):
    upward = upward_imports(fedsim_graph)
    assert not upward, "imports against the layer map:\n" + "\n".join(upward)


def test_levels(fedsim_graph):
    """At most MAX_LEVELS layers, and the map's entries stack into at most MAX_LEVELS levels
    when each is placed above all that it imports. (Single modules stack higher: a long chain
    inside one layer, e.g. the sweep runner over the engine, is not a layer.)"""
    assert len(LAYERS) <= MAX_LEVELS
    by_entry = levels(entry_graph(fedsim_graph))
    assert 1 + max(by_entry.values()) <= MAX_LEVELS, sorted(by_entry.items(), key=lambda kv: kv[1])
    by_module = levels(fedsim_graph)
    # the ground floor: the settings and their plug-in registry import no other fedsim module
    assert set(fedsim_graph["fedsim.config"]) <= {"fedsim.config.registry"}
    assert by_module["fedsim.config.registry"] == 0 and not fedsim_graph["fedsim.config.registry"]


def test_every_layer_is_used(fedsim_graph):
    used = {layer_of(m) for m in fedsim_graph}
    assert used == set(range(len(LAYERS))), "empty layers: remove them from LAYERS"


# -- the checker can fail ------------------------------------------------------------------------
TOY = (("low", ("p.low",)), ("mid", ("p.mid",)), ("top", ("p.top", "p.mid.cli")))


def test_checker_reports_a_circle():
    graph = {"a": {"b": "a.py:1"}, "b": {"c": "b.py:2"}, "c": {"a": "c.py:3"}, "d": {"a": "d.py:1"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b": ""}, "b": {}}) == []


def test_checker_reports_upward_imports_and_unmapped_modules():
    graph = {"p.low": {"p.mid": "p/low.py:3"}, "p.mid": {"p.low": "p/mid.py:1"},
             "p.mid.cli": {"p.top": "p/mid/cli.py:5"}, "p.top": {"p.mid.cli": "p/top.py:1"},
             "p.stray": {}}
    assert upward_imports(graph, TOY) == [
        "p.low (layer 0, low) imports p.mid (layer 1, mid) at p/low.py:3",
        ("p.stray is on no layer: add it to LAYERS (tests/test_layers.py) and to "
         "docs/ARCHITECTURE.md"),
    ]
    assert levels({"a": {"b": ""}, "b": {"c": ""}, "c": {}}) == {"a": 2, "b": 1, "c": 0}


def test_checker_reads_every_kind_of_import(tmp_path):
    pkg = tmp_path / "fedsim"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "sub" / "__init__.py").write_text("from fedsim.top import x\n")
    (pkg / "sub" / "leaf.py").write_text("from . import other\n")
    (pkg / "sub" / "other.py").write_text("")
    (pkg / "top.py").write_text("x = 1\n")
    (pkg / "low.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from fedsim.top import x\n"
        "def f():\n    import fedsim.sub.leaf\n")
    (pkg / "bad.py").write_text("import analysis.report\nfrom fedsim.nothere import y\n")
    graph, problems = module_graph(tmp_path)
    assert graph["fedsim.low"] == {"fedsim.top": "fedsim/low.py:3", "fedsim.sub": "fedsim/low.py:5",
                                   "fedsim.sub.leaf": "fedsim/low.py:5"}
    assert graph["fedsim.sub.leaf"] == {"fedsim.sub.other": "fedsim/sub/leaf.py:1"}
    assert graph["fedsim.sub"] == {"fedsim.top": "fedsim/sub/__init__.py:1"}
    assert problems == [
        "fedsim.bad imports analysis.report (fedsim/bad.py:1): fedsim never imports analysis/",
        "fedsim.bad imports fedsim.nothere.y: no such module (fedsim/bad.py:2)",
    ]
