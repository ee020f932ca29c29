"""Files written atomically, and cache files that are checked before use.

:func:`write_file_atomic` is fedsim's one way to write a file (output tables, caches,
checkpoints; whole output folders are swapped in by :func:`fedsim.outdir.publish`). A cache
file has a versioned header, the owner's key and a SHA-256.

Layout: the line ``fedsim-cache`` then one JSON line ``{"version", "kind", "key", "nbytes",
"sha256"}``, then ``nbytes`` payload bytes. :func:`read_cache` returns the payload only when
every field matches; a missing file is a silent miss, and a corrupt, truncated, foreign or
old-version file is a miss with one warning line, so the caller rebuilds it. :func:`write_cache`
writes atomically; where the cache folder is not writable it warns once and the caller keeps
the data in memory only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

MAGIC = b"fedsim-cache\n"
VERSION = 1

log = logging.getLogger("fedsim.cache")


def read_cache(path: Path, kind: str, key: str) -> bytes | None:
    """The payload cached at ``path`` for (``kind``, ``key``), or None (rebuild it)."""
    try:
        blob = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        log.warning("cache %s is unreadable (%s); rebuilding", path, exc.strerror)
        return None
    problem = _problem(blob, kind, key)
    if problem:
        log.warning("cache %s is %s; rebuilding it", path, problem)
        return None
    return blob[blob.index(b"\n", len(MAGIC)) + 1:]


def write_cache(path: Path, kind: str, key: str, payload: bytes) -> bool:
    """Write the payload atomically; False (with one warning) where the folder is not writable."""
    header = {"version": VERSION, "kind": kind, "key": key, "nbytes": len(payload),
              "sha256": hashlib.sha256(payload).hexdigest()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomic(path, lambda tmp: tmp.write_bytes(
            MAGIC + json.dumps(header).encode() + b"\n" + payload))
        return True
    except OSError as exc:
        log.warning("cannot write cache %s (%s); using the data in memory only", path,
                    exc.strerror or exc)
        return False


def write_file_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write one file via ``write(tmp)`` and rename it over ``path`` (never half-written).

    ``tmp`` is a hidden name beside ``path``, unique per call (concurrent writers of one path
    never share it); any exception, an OSError included, removes it and propagates.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _problem(blob: bytes, kind: str, key: str) -> str:
    """Why ``blob`` is not a valid cache for (kind, key); empty if it is."""
    if not blob.startswith(MAGIC) or b"\n" not in blob[len(MAGIC):]:
        return "not a fedsim cache file (corrupt or from an older fedsim)"
    end = blob.index(b"\n", len(MAGIC))
    try:
        header = json.loads(blob[len(MAGIC):end])
    except ValueError:
        return "corrupt (unreadable header)"
    if not isinstance(header, dict):
        return "corrupt (unreadable header)"
    if header.get("version") != VERSION:
        return f"of another cache version ({header.get('version')})"
    if header.get("kind") != kind or header.get("key") != key:
        return f"for something else ({header.get('kind')} {header.get('key')})"
    payload = blob[end + 1:]
    if len(payload) != header.get("nbytes"):
        return f"truncated ({len(payload)} of {header.get('nbytes')} bytes)"
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        return "corrupt (checksum mismatch)"
    return ""
