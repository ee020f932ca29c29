"""Output folders that never cost a user a file: checked before a run, swapped in atomically.

fedsim only ever replaces a folder it wrote itself, recognised by the marker file
``fedsim-output.json`` (written last, so a folder holding it is complete). Before simulating,
:func:`check_output` refuses any other existing path with one line, and checks that the
location is writable. :func:`publish` builds the new folder in a hidden sibling and exchanges it
with the old one in one ``renameat2(RENAME_EXCHANGE)`` call, so a kill at any instant leaves
either the old or the new folder at the path. Where the kernel lacks the exchange, two renames
are used and :func:`recover` (run by :func:`check_output`) puts the old folder back. Hidden
siblings left by a killed process are removed by the next check.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from fedsim.cachefile import write_file_atomic

MARKER = "fedsim-output.json"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


class OutputError(ValueError):
    """The output path cannot be used; the message is one line naming the path and why."""


def is_ours(folder: Path, kind: str) -> bool:
    """Whether ``folder`` is a complete fedsim output folder of ``kind`` ("run" or "sweep")."""
    try:
        return json.loads((folder / MARKER).read_text()).get("kind") == kind
    except (OSError, ValueError, AttributeError):
        return False


def check_output(out: Path, kind: str, inputs: Sequence[Path] = ()) -> None:
    """Refuse, with one line, an output path fedsim must not replace or cannot write.

    Parameters
    ----------
    out : Path
        The folder a run (``kind="run"``) replaces or a sweep (``kind="sweep"``) fills.
    inputs : sequence of Path
        Files the run reads (the scenario file); ``out`` must not contain them.
    """
    out = Path(os.path.abspath(out))
    recover(out)
    real = out.resolve()
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise OutputError(f"--out {out}: is the current folder or one of its parents; "
                          "choose a new folder")
    for path in inputs:
        if real in Path(path).resolve().parents:
            raise OutputError(f"--out {out}: holds the input file {path}; choose a new folder")
    if out.is_symlink():
        raise OutputError(f"--out {out}: is a symbolic link; give the real folder")
    if out.exists():
        if not out.is_dir():
            raise OutputError(f"--out {out}: is a file, not an output folder; choose a new folder")
        if not is_ours(out, kind) and any(out.iterdir()):
            raise OutputError(f"--out {out}: exists and is not a fedsim {kind} output folder "
                              f"(no {MARKER}); fedsim will not replace it: choose a new folder")
    _check_writable(out.parent)


def claim(out: Path, kind: str) -> None:
    """Create ``out`` (checked by :func:`check_output`) as a fedsim folder filled in place."""
    out.mkdir(parents=True, exist_ok=True)
    if not is_ours(out, kind):
        write_file_atomic(out / MARKER, lambda p: p.write_text(json.dumps({"kind": kind})))


def publish(out: Path, fill: Callable[[Path], None], kind: str) -> Path:
    """Build a folder with ``fill(tmp)`` and put it at ``out`` atomically, replacing the old one.

    Any exception (or a kill) while filling leaves ``out`` as it was.
    """
    out = Path(os.path.abspath(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(out, "new"), dir=out.parent))
    try:
        fill(tmp)
        (tmp / MARKER).write_text(json.dumps({"kind": kind}))
        if out.exists():
            _swap(tmp, out)  # tmp now holds the old folder
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def recover(out: Path) -> None:
    """Finish or undo a swap a killed process left half done, and remove its hidden folders."""
    if not out.parent.is_dir():
        return
    stale = re.compile(re.escape(f".{out.name}.fedsim-") + r"(new|old)-(\d+)-")
    litter = [(m.group(1), p) for p in out.parent.iterdir()
              if (m := stale.match(p.name)) and not _alive(int(m.group(2)))]
    for tag, path in litter:
        if tag == "old" and not out.exists():  # killed between the two fallback renames
            os.replace(path, out)
    for _, path in litter:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)


def _prefix(out: Path, tag: str) -> str:
    return f".{out.name}.fedsim-{tag}-{os.getpid()}-"


def _swap(a: Path, b: Path) -> None:
    """Exchange two paths atomically (Linux); elsewhere, two renames that :func:`recover` undoes."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(b))
    old = b.parent / (_prefix(b, "old") + os.urandom(4).hex())
    os.replace(b, old)
    os.replace(a, b)
    os.replace(old, a)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_writable(folder: Path) -> None:
    """Probe the nearest existing ancestor of ``folder`` by creating and removing a folder in it."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"--out: {probe} is a file, so no folder can be created under it")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".fedsim-probe-", dir=probe))
    except OSError as exc:
        raise OutputError(f"--out: cannot write in {probe}: {exc.strerror}") from None
