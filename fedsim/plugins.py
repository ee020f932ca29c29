"""Imports the built-in plug-ins, so each registers itself (fedsim/config/registry.py).

Front ends and the engine import this module before they validate a scenario; a plug-in of your
own registers when its module is imported (docs/PLUGINS.md).
"""

from fedsim import encryption, models
from fedsim.attacks import adversaries, dlg, inverting
from fedsim.codecs import enn, identity, qsgd
from fedsim.config.registry import (
    ADVERSARIES,
    ATTACKS,
    CODECS,
    DATASETS,
    ENCRYPTIONS,
    MODELS,
    Registry,
)
from fedsim.data import loading, synthetic
from fedsim.keynet import setup

BUILT_IN = (identity, qsgd, enn, encryption, setup, adversaries, dlg, inverting, models, loading,
            synthetic)
"""The built-in plug-in modules (each registered its kinds when imported)."""

#: The extension points, by the scenario key that selects a kind.
EXTENSION_POINTS: dict[str, Registry] = {
    "codec": CODECS, "encryption": ENCRYPTIONS, "attack.adversaries[]": ADVERSARIES,
    "attack.method": ATTACKS, "model.kind": MODELS, "data.dataset": DATASETS}


def registry_table() -> str:
    """Markdown table of every registered kind: scenario key, kind, config class, module."""
    rows = ["| scenario key | kind | config class | module |", "|---|---|---|---|"]
    for key, registry in EXTENSION_POINTS.items():
        for kind in sorted(registry.kinds()):
            cls, factory = registry.config(kind), registry.factory(kind)
            name = f"`{cls.__name__}`" if cls is not None else "(shared section)"
            module = (cls or getattr(factory, "run", factory)).__module__
            rows.append(f"| `{key}` | `{kind}` | {name} | `{module}` |")
    return "\n".join(rows) + "\n"
