"""MNIST IDX reading: the shared files (sizes, labels vs raw bytes) and corrupt-file errors."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from advimage.data import load_dataset


@pytest.mark.shared
def test_shared_mnist_sizes_and_labels_match_idx_bytes(mnist_root: Path) -> None:
    train = load_dataset("mnist", "train", data_root=mnist_root)
    test = load_dataset("mnist", "test", data_root=mnist_root.parent)  # parent holding raw/
    assert (len(train), len(test)) == (60_000, 10_000)
    assert train.image_shape == (1, 28, 28) and train.classes == [str(d) for d in range(10)]
    with gzip.open(mnist_root / "train-labels-idx1-ubyte.gz", "rb") as fh:
        raw = fh.read()
    assert raw[:8] == struct.pack(">II", 0x801, 60_000)
    assert train.labels[:100].tolist() == list(raw[8:108])
    assert train.labels[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first MNIST labels
    with gzip.open(mnist_root / "t10k-images-idx3-ubyte.gz", "rb") as fh:
        first = np.frombuffer(fh.read(16 + 784), dtype=np.uint8, offset=16).reshape(28, 28)
    x0, _ = test[0]
    assert torch.equal(x0[0], torch.from_numpy(first.astype(np.float32) / 255))
    x, y = next(train.batches(512))
    assert x.shape == (512, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64


def _write_idx(folder: Path, prefix: str, n: int, *, magic_img: int = 0x803,
               truncate: int = 0, gz: bool = False) -> np.ndarray:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    img_bytes = struct.pack(">IIII", magic_img, n, 28, 28) + imgs.tobytes()
    lab_bytes = struct.pack(">II", 0x801, n) + labels.tobytes()
    if truncate:
        img_bytes = img_bytes[:-truncate]
    opener = gzip.open if gz else open
    ext = ".gz" if gz else ""
    with opener(folder / f"{prefix}-images-idx3-ubyte{ext}", "wb") as fh:
        fh.write(img_bytes)
    with opener(folder / f"{prefix}-labels-idx1-ubyte{ext}", "wb") as fh:
        fh.write(lab_bytes)
    return imgs


@pytest.mark.parametrize("gz", [False, True])
def test_valid_idx_in_mnist_raw_layout(tmp_path: Path, gz: bool) -> None:
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    imgs = _write_idx(folder, "t10k", 5, gz=gz)
    x, y = load_dataset("mnist", "test", data_root=tmp_path).tensors()
    assert torch.equal(x, torch.from_numpy(imgs[:, None].astype(np.float32) / 255))
    assert y.shape == (5,)


def test_wrong_magic_is_reported(tmp_path: Path) -> None:
    _write_idx(tmp_path, "t10k", 3, magic_img=0x801)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte has bad magic number"):
        load_dataset("mnist", "test", data_root=tmp_path)


def test_truncated_file_is_reported(tmp_path: Path) -> None:
    _write_idx(tmp_path, "train", 4, truncate=100, gz=True)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz holds .*truncated"):
        load_dataset("mnist", "train", data_root=tmp_path)


def test_broken_gzip_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, 0))
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz"):
        load_dataset("mnist", "test", data_root=tmp_path)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", "train", data_root=tmp_path)
    with pytest.raises(ValueError, match="MNIST not found"):
        load_dataset("mnist", "test", data_root=tmp_path / "nope")
