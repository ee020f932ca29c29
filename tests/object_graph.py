"""Walking an object's memory, for the tests that check what a process holds (never keys, never
an unmasked single update)."""

from __future__ import annotations

import gc
import sys
import types


def reachable(root: object, stop: tuple[type, ...]) -> list[object]:
    """Every object reachable from ``root`` by ``gc.get_referents``, not entering ``stop`` types.

    Modules, classes and module namespaces (a function's globals) are not entered.
    """
    seen = {id(root)} | {id(vars(m)) for m in list(sys.modules.values()) if m is not None}
    todo, out = [root], []
    while todo:
        obj = todo.pop()
        out.append(obj)
        for ref in gc.get_referents(obj):
            if id(ref) in seen or isinstance(ref, (type, types.ModuleType) + stop):
                continue
            seen.add(id(ref))
            todo.append(ref)
    return out
