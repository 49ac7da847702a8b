"""MNIST (LeCun, Bottou, Bengio & Haffner, 1998, "Gradient-Based Learning Applied to Document
Recognition"): 60,000 train / 10,000 test 28x28 grey digits in the IDX format.

Files are read as published, gzipped or not: ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.
``data_root`` may hold them directly, or be a parent with ``raw/`` or ``MNIST/raw/`` (torchvision's
layout). Every header is validated (magic number, dimensions, payload length, label range), so a
corrupt or truncated file fails with one line naming it instead of producing garbage images.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from advimage.data.base import ImageDataset, uint8_loader
from advimage.data.registry import register_dataset

__all__ = ["load_idx_dataset", "load_mnist", "read_idx"]

_PREFIX = {"train": "train", "test": "t10k"}
_SIDE = 28  # MNIST images are 28x28
_IDX_UBYTE = 0x08  # IDX type code for unsigned bytes


def _missing(root: Path | None, title: str = "MNIST", torchvision_dir: str = "MNIST") -> ValueError:
    return ValueError(
        f"{title} not found at {root if root is not None else 'data_root'}: pass data_root= "
        f"pointing at a folder (or its raw/ or {torchvision_dir}/raw/ subfolder) holding "
        "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
        "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz], or add --download"
    )


def _find(root: Path, stem: str, title: str = "MNIST", torchvision_dir: str = "MNIST") -> Path:
    for folder in (root, root / "raw", root / torchvision_dir / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    raise _missing(root, title, torchvision_dir)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file with ``ndim`` dimensions, validating header and length."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                data = fh.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"cannot read IDX file {path}: {exc}") from None
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"IDX file {path} is truncated: {len(data)} bytes, header needs {header}")
    zero, dtype, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != _IDX_UBYTE or dims != ndim:
        raise ValueError(f"IDX file {path} has bad magic number 0x{data[:4].hex()} "
                         f"(expected 0x00000{_IDX_UBYTE:x}{ndim:02x})")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != expected:
        raise ValueError(f"IDX file {path} holds {len(data) - header} data bytes, its header "
                         f"{shape} needs {expected} (truncated or corrupt)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load_idx_dataset(
    name: str, split: str, data_root: Path | None, image_size: int | None, *,
    classes: list[str], title: str, torchvision_dir: str,
) -> ImageDataset:
    """A 28x28 grey IDX dataset in MNIST's file layout (MNIST, Fashion-MNIST), labels 0..9."""
    if data_root is None or not Path(data_root).is_dir():
        raise _missing(None if data_root is None else Path(data_root), title, torchvision_dir)
    root = Path(data_root)
    prefix = _PREFIX[split]
    img_path = _find(root, f"{prefix}-images-idx3-ubyte", title, torchvision_dir)
    lab_path = _find(root, f"{prefix}-labels-idx1-ubyte", title, torchvision_dir)
    images = read_idx(img_path, 3)  # (N, 28, 28) uint8
    labels = read_idx(lab_path, 1)  # (N,) uint8
    if images.shape[1:] != (_SIDE, _SIDE):
        raise ValueError(f"{title} images in {img_path} are {images.shape[1]}x"
                         f"{images.shape[2]}, expected {_SIDE}x{_SIDE}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{lab_path} has {labels.shape[0]} labels for {images.shape[0]} "
                         f"images in {img_path}")
    if labels.size and int(labels.max()) > 9:
        raise ValueError(f"{lab_path} has label {int(labels.max())}, expected 0..9")
    side = image_size or _SIDE
    loader = uint8_loader(images, scale=255.0, channels_last=False, image_size=image_size)
    return ImageDataset(name, split, list(classes), labels.astype(np.int64),
                        (1, side, side), loader)


@register_dataset("mnist")
def load_mnist(
    split: str = "train", *, data_root: Path | None = None, image_size: int | None = None,
) -> ImageDataset:
    """MNIST: 60,000 train / 10,000 test images, shape (1, 28, 28), classes "0".."9"."""
    return load_idx_dataset("mnist", split, data_root, image_size,
                            classes=[str(d) for d in range(10)], title="MNIST",
                            torchvision_dir="MNIST")
