"""CIFAR-10: the shared PNG tree (counts, class order, published channel means, fast cached load),
the pickled python batches (a small fake), and refusal of a malicious pickle."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advimage.data import load_dataset
from advimage.data.cifar10 import CIFAR10_CLASSES

# Published per-channel means of the CIFAR-10 training set (e.g. the usual normalisation stats).
PUBLISHED_MEAN = (0.4914, 0.4822, 0.4465)


@pytest.mark.shared
def test_shared_cifar10_counts_classes_means_and_cached_speed(cifar10_root: Path) -> None:
    train = load_dataset("cifar10", "train", data_root=cifar10_root)  # builds the cache if needed
    test = load_dataset("cifar10", "test", data_root=cifar10_root)
    assert (len(train), len(test)) == (50_000, 10_000)
    assert train.classes == list(CIFAR10_CLASSES) and train.classes[0] == "airplane"
    assert train.classes[-1] == "truck" and train.image_shape == (3, 32, 32)
    assert torch.equal(torch.bincount(train.labels), torch.full((10,), 5000))
    assert torch.equal(torch.bincount(test.labels), torch.full((10,), 1000))
    # channel means accumulated batch by batch (never the whole set as float32)
    total = torch.zeros(3, dtype=torch.float64)
    for x, _ in train.batches(10_000):
        total += x.double().sum(dim=(0, 2, 3))
    means = (total / (50_000 * 32 * 32)).numpy()
    assert np.allclose(means, PUBLISHED_MEAN, atol=1e-3), means
    # a loaded image equals the decoded PNG file (first file of class 0 in name order)
    first = sorted(os.listdir(cifar10_root / "train" / "airplane"))[0]
    png = np.asarray(Image.open(cifar10_root / "train" / "airplane" / first), dtype=np.float32)
    x0, y0 = train[0]
    assert y0 == 0 and torch.equal(x0, torch.from_numpy(png / 255.0).permute(2, 0, 1))
    x, y = next(test.batches(256))
    assert x.shape == (256, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    start = time.perf_counter()
    load_dataset("cifar10", "train", data_root=cifar10_root)
    assert time.perf_counter() - start < 3.0  # cached: well under a second on an idle machine


def _write_fake_batches(folder: Path, n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A tiny ``cifar-10-batches-py``: random images in the real (N, 3072) R|G|B row layout."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    all_imgs, all_labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        imgs = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)  # (N, H, W, C)
        labels = rng.integers(0, 10, n).tolist()
        rows = imgs.transpose(0, 3, 1, 2).reshape(n, 3072)
        with open(folder / name, "wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": rows,
                         b"filenames": [b"f%d.png" % i for i in range(n)]}, fh, protocol=2)
        if name != "test_batch":
            all_imgs.append(imgs)
            all_labels += labels
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR10_CLASSES],
                     b"num_cases_per_batch": n}, fh)
    return np.concatenate(all_imgs), np.asarray(all_labels)


def test_pickled_batches_load_from_folder_or_parent(tmp_path: Path) -> None:
    imgs, labels = _write_fake_batches(tmp_path / "cifar-10-batches-py")
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):
        ds = load_dataset("cifar10", "train", data_root=root)
        assert len(ds) == 30 and ds.classes == list(CIFAR10_CLASSES)
        x, y = ds.tensors()
        ref = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
        assert torch.equal(x, ref) and torch.equal(y, torch.from_numpy(labels))
    assert len(load_dataset("cifar10", "test", data_root=tmp_path)) == 6


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_malicious_pickle_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_fake_batches(folder)
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"data": _Evil(), b"labels": [0]}, fh)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"refusing to unpickle .*test_batch.*system"):
        load_dataset("cifar10", "test", data_root=tmp_path)
    assert not (tmp_path / "pwned.txt").exists()
    (folder / "test_batch").write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="test_batch"):
        load_dataset("cifar10", "test", data_root=tmp_path)


def test_png_tree_cache_and_corrupt_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVIMAGE_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(1)
    for cls in CIFAR10_CLASSES:
        (tmp_path / "data" / "test" / cls).mkdir(parents=True)
        for i in range(2):
            arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "data" / "test" / cls / f"{cls}_{i}.png")
    ds = load_dataset("cifar10", "test", data_root=tmp_path / "data")
    assert len(ds) == 20 and ds.labels.tolist() == [k for k in range(10) for _ in range(2)]
    cached = list((tmp_path / "cache").glob("cifar10-test-*.npy"))
    assert len(cached) == 1
    x_again = load_dataset("cifar10", "test", data_root=tmp_path / "data").tensors()[0]
    assert torch.equal(x_again, ds.tensors()[0])
    # a changed file invalidates the cache key; a corrupt PNG is reported by name
    bad = tmp_path / "data" / "test" / "cat" / "cat_1.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match="cat_1.png"):
        load_dataset("cifar10", "test", data_root=tmp_path / "data")
    Image.new("L", (32, 32)).save(bad)
    with pytest.raises(ValueError, match=r"cat_1.png is 32x32 L, expected 32x32 RGB"):
        load_dataset("cifar10", "test", data_root=tmp_path / "data")


def test_missing_data_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cifar-10-batches-py"):
        load_dataset("cifar10", "train", data_root=tmp_path)
    with pytest.raises(ValueError, match="data_root"):
        load_dataset("cifar10", "train")


def test_corrupt_cache_entry_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVIMAGE_CACHE", str(tmp_path / "cache"))
    for cls in CIFAR10_CLASSES:
        (tmp_path / "d" / "train" / cls).mkdir(parents=True)
        Image.new("RGB", (32, 32), (7, 8, 9)).save(tmp_path / "d" / "train" / cls / "x.png")
    ref = load_dataset("cifar10", "train", data_root=tmp_path / "d").tensors()[0]
    (entry,) = (tmp_path / "cache").glob("cifar10-train-*.npy")
    entry.write_bytes(entry.read_bytes()[:100])  # truncated by a crash or a full disk
    again = load_dataset("cifar10", "train", data_root=tmp_path / "d").tensors()[0]
    assert torch.equal(again, ref)
    assert entry.stat().st_size > 100  # rewritten
    assert not list((tmp_path / "cache").glob(".*.tmp"))  # no temporary files left behind
