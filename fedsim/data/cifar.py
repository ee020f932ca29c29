"""CIFAR-10 loaders: torchvision's pickles, or the ``cifar10-jpeg.tar.gz`` JPEG export.

The JPEG archive (``train/<class>/NNNN.jpg``, ``test/<class>/NNNN.jpg``) is streamed through
:mod:`tarfile` and decoded with Pillow once; nothing is extracted into the data folder. The
decoded uint8 arrays are cached as ``<cache_dir>/cifar10-jpeg-<sha256[:16]>.cache``, keyed by the
archive's SHA-256 and checksummed (:mod:`fedsim.cachefile`: a corrupt or foreign cache is
rebuilt, an unwritable folder means memory only).
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zlib
from pathlib import Path

import numpy as np

from fedsim.cachefile import log, read_cache, write_cache
from fedsim.data.base import DataError
from fedsim.data.raw import RawData

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
JPEG_ARCHIVE = "cifar10-jpeg.tar.gz"
PICKLE_DIR = "cifar-10-batches-py"
_CLASS_INDEX = {c: i for i, c in enumerate(CIFAR10_CLASSES)}
_SPLITS = ("train", "test")
_ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_cifar10_raw(root: str, download: bool, cache_dir: str) -> RawData:
    """CIFAR-10 from ``root``: the pickle layout (or a download) first, else the JPEG archive."""
    archive = os.path.join(root, JPEG_ARCHIVE)
    if os.path.isdir(os.path.join(root, PICKLE_DIR)) or download:
        return _load_pickles(root, download)
    if os.path.isfile(archive):
        return _load_jpeg_archive(archive, cache_dir)
    raise DataError(
        f"dataset 'cifar10': neither {PICKLE_DIR!r} nor {JPEG_ARCHIVE!r} under {root!r} "
        "(set data_root or FEDSIM_DATA, or download: true)"
    )


def _load_pickles(root: str, download: bool) -> RawData:
    from torchvision.datasets import CIFAR10

    try:
        train = CIFAR10(root=root, train=True, download=download)
        test = CIFAR10(root=root, train=False, download=download)
    except Exception as exc:  # missing / corrupt batches, failed download
        raise DataError(
            f"dataset 'cifar10': cannot read the CIFAR-10 pickles under {root!r}: {exc}"
        ) from exc
    return RawData(
        x_train=np.ascontiguousarray(train.data.transpose(0, 3, 1, 2)),
        y_train=np.asarray(train.targets, dtype=np.int64),
        x_test=np.ascontiguousarray(test.data.transpose(0, 3, 1, 2)),
        y_test=np.asarray(test.targets, dtype=np.int64),
        num_classes=10,
        source=f"CIFAR-10 python pickles (lossless) at {os.path.join(root, PICKLE_DIR)}",
    )


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_jpeg_archive(archive: str, cache_dir: str) -> RawData:
    digest = _sha256(archive)
    cache_file = Path(cache_dir) / f"cifar10-jpeg-{digest[:16]}.cache"
    arrays = _read_cache(cache_file, digest)
    if arrays is None:
        arrays = decode_jpeg_archive(archive)
        _check_classes(arrays, archive)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        write_cache(cache_file, "cifar10-jpeg", digest, buf.getvalue())
    return RawData(
        **arrays,
        num_classes=len(CIFAR10_CLASSES),
        source=(
            f"CIFAR-10 JPEG export (lossy JPEG, not the original pixels) at {archive}, "
            f"sha256 {digest[:16]}"
        ),
    )


def _read_cache(path: Path, digest: str) -> dict[str, np.ndarray] | None:
    """The cached arrays of the archive with SHA-256 ``digest``, or None (rebuild)."""
    payload = read_cache(path, "cifar10-jpeg", digest)
    if payload is None:
        return None
    try:
        with np.load(io.BytesIO(payload)) as npz:
            arrays = {k: npz[k] for k in _ARRAY_KEYS}
        _check_classes(arrays, str(path))
    except (OSError, KeyError, ValueError, zlib.error) as exc:  # DataError is a ValueError
        log.warning("cache %s does not hold valid CIFAR-10 (%s); rebuilding it", path, exc)
        return None
    return arrays


def _check_classes(arrays: dict[str, np.ndarray], where: str) -> None:
    """Every split of CIFAR-10 holds all ten classes (a degenerate decode is not data)."""
    for split in _SPLITS:
        found = np.unique(arrays[f"y_{split}"])
        if len(found) != len(CIFAR10_CLASSES):
            raise DataError(f"{where}: the {split} split holds {len(found)} of the 10 CIFAR-10 "
                            "classes")


def decode_jpeg_archive(archive: str) -> dict[str, np.ndarray]:
    """Decode every ``{train,test}/<class>/*.jpg`` of a tar.gz into uint8 arrays.

    Parameters
    ----------
    archive : str
        Path to the tar.gz (members may sit under one extra top-level folder).

    Returns
    -------
    dict of np.ndarray
        ``x_train``/``x_test``: uint8 (N, 3, H, W); ``y_train``/``y_test``: int64 (N,).
        Samples are ordered by class, then file name.

    Raises
    ------
    DataError
        Unreadable archive or image, images of different sizes, or an empty split.
    """
    from PIL import Image

    found: dict[str, list[tuple[int, str, np.ndarray]]] = {s: [] for s in _SPLITS}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                parts = member.name.split("/")
                if not member.isfile() or len(parts) < 3 or not parts[-1].lower().endswith(".jpg"):
                    continue
                split, cls, fname = parts[-3:]
                if split not in found or cls not in _CLASS_INDEX:
                    continue
                f = tar.extractfile(member)
                with Image.open(io.BytesIO(f.read())) as im:
                    found[split].append((_CLASS_INDEX[cls], fname, np.asarray(im.convert("RGB"))))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"dataset 'cifar10': corrupt JPEG archive {archive!r}: {exc}") from exc
    out: dict[str, np.ndarray] = {}
    for split, items in found.items():
        if not items:
            raise DataError(
                f"dataset 'cifar10': archive {archive!r} has no {split}/<class>/*.jpg images"
            )
        items.sort(key=lambda t: (t[0], t[1]))
        shapes = {a.shape for _, _, a in items}
        if len(shapes) != 1:
            raise DataError(
                f"dataset 'cifar10': archive {archive!r} mixes image sizes {sorted(shapes)}"
            )
        out[f"x_{split}"] = np.ascontiguousarray(
            np.stack([a for _, _, a in items]).transpose(0, 3, 1, 2)
        )
        out[f"y_{split}"] = np.array([c for c, _, _ in items], dtype=np.int64)
    return out
