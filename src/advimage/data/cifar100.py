"""CIFAR-100 (Krizhevsky, 2009): 50,000 train / 10,000 test 32x32 RGB images, 100 classes.

Read from the python version, ``cifar-100-python/{train,test,meta}`` (``data_root`` may be that
folder or its parent), with the restricted unpickler of :mod:`advimage.data.safe_pickle`. Labels
are the 100 fine classes, named as in ``meta``'s ``fine_label_names``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from advimage.data.base import ImageDataset, uint8_loader
from advimage.data.cifar10 import read_pickled_batch
from advimage.data.registry import register_dataset
from advimage.data.safe_pickle import safe_load

__all__ = ["load_cifar100"]

_SIDE = 32
_N_CLASSES = 100


def _missing(root: Path | None) -> ValueError:
    return ValueError(
        f"CIFAR-100 not found at {root if root is not None else 'data_root'}: pass data_root= "
        "pointing at the python version cifar-100-python/{train,test,meta} (the folder itself "
        "or its parent), or add --download")


def _get(d: dict, key: str) -> object:
    return d.get(key.encode(), d.get(key))


def _class_names(meta: Path) -> list[str]:
    doc = safe_load(meta)
    names = _get(doc, "fine_label_names") if isinstance(doc, dict) else None
    if not isinstance(names, list) or len(names) != _N_CLASSES:
        raise ValueError(f"{meta}: 'fine_label_names' must be a list of {_N_CLASSES} names")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_pickled_batch(path, "fine_labels", _N_CLASSES)
    return np.ascontiguousarray(images), labels


@register_dataset("cifar100")
def load_cifar100(
    split: str = "train", *, data_root: Path | None = None, image_size: int | None = None,
) -> ImageDataset:
    """CIFAR-100: 50,000 train / 10,000 test images, shape (3, 32, 32), 100 fine classes."""
    if data_root is None:
        raise _missing(None)
    root = Path(data_root)
    folder = next((c for c in (root, root / "cifar-100-python")
                   if (c / split).is_file() and (c / "meta").is_file()), None)
    if folder is None:
        raise _missing(root)
    images, labels = _read_batch(folder / split)
    classes = _class_names(folder / "meta")
    side = image_size or _SIDE
    loader = uint8_loader(images, scale=255.0, channels_last=True, image_size=image_size)
    return ImageDataset("cifar100", split, classes, labels, (3, side, side), loader)
