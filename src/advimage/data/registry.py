"""Dataset registry: ``load_dataset("cifar10", "test", data_root=...)`` and friends.

A dataset factory is called as ``factory(split, data_root=..., image_size=..., **kw)`` and
returns an :class:`~advimage.data.base.ImageDataset`. Names are case-insensitive and unique.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from advimage.data.base import ImageDataset
from advimage.registry import Registry

__all__ = ["DATASETS", "SPLITS", "list_datasets", "load_dataset", "register_dataset"]

SPLITS = ("train", "test")

DatasetFactory = Callable[..., ImageDataset]
DATASETS: Registry[DatasetFactory] = Registry("dataset")


def register_dataset(name: str, factory: DatasetFactory | None = None):
    """Register ``factory`` under ``name`` (usable as a decorator). Duplicate names raise."""
    return DATASETS.register(name, factory)


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`, sorted."""
    return DATASETS.names()


def load_dataset(
    name: str = "digits",
    split: str = "train",
    *,
    data_root: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
    **kw: object,
) -> ImageDataset:
    """Load dataset ``name`` for ``split`` ("train" or "test").

    Args:
        name: one of :func:`list_datasets` (``digits`` needs no files).
        split: ``"train"`` or ``"test"``.
        data_root: folder holding the files (datasets that need files raise a one-line
            ``ValueError`` saying where to put them when it is missing).
        image_size: square output size; datasets resize to it when given.
        **kw: dataset-specific options (e.g. ``channels=1`` for ``folder``).
    """
    factory = DATASETS.get(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if image_size is not None and (isinstance(image_size, bool)
                                   or not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
    root = None if data_root is None else Path(data_root).expanduser()
    return factory(split, data_root=root, image_size=image_size, **kw)
