"""Dataset registry: ``load_dataset("cifar10", "test", data_root=...)`` and friends.

A dataset factory is called as ``factory(split, data_root=..., image_size=..., **kw)`` and
returns an :class:`~advimage.data.base.ImageDataset`. Names are case-insensitive and unique.
A factory lists the splits it serves in a ``splits`` attribute (default :data:`SPLITS`); one
that takes ``classes=`` (the model's class names) maps its labels to them by name, and for the
others the registry checks that the model does not number the same classes in another order.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from advimage.data.base import ImageDataset
from advimage.errors import UserInputError
from advimage.registry import Registry

__all__ = ["DATASETS", "SPLITS", "dataset_accepts", "dataset_splits", "list_datasets",
           "load_dataset", "register_dataset"]

SPLITS = ("train", "test")

DatasetFactory = Callable[..., ImageDataset]
DATASETS: Registry[DatasetFactory] = Registry("dataset")


def register_dataset(name: str, factory: DatasetFactory | None = None):
    """Register ``factory`` under ``name`` (usable as a decorator). Duplicate names raise."""
    return DATASETS.register(name, factory)


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`, sorted."""
    return DATASETS.names()


def dataset_splits(name: str) -> tuple[str, ...]:
    """The splits dataset ``name`` serves (``("train", "test")`` unless it says otherwise)."""
    return tuple(getattr(DATASETS.get(name), "splits", SPLITS))


def dataset_accepts(name: str, option: str) -> bool:
    """Whether dataset ``name``'s factory takes the keyword ``option`` (e.g. ``channels``)."""
    return option in inspect.signature(DATASETS.get(name)).parameters


def _check_class_order(ds: ImageDataset, classes: Sequence[str]) -> None:
    """Refuse a model that numbers the dataset's own classes in another order."""
    mine = [c.lower() for c in ds.classes]
    theirs = [str(c).lower() for c in classes]
    if mine != theirs and sorted(mine) == sorted(theirs):
        raise UserInputError(
            f"the model numbers the classes of dataset {ds.name!r} in another order (model: "
            f"{', '.join(map(str, classes))}; dataset: {', '.join(ds.classes)}), so every label "
            "would be misread")


def _data_root(name: str, split: str, data_root: str | os.PathLike[str] | None,
               download: bool, progress: bool) -> Path | None:
    """``data_root`` as a path, after ``download`` fetched the files into it (or the cache)."""
    from advimage.data.sources import SOURCES

    root = None if data_root is None else Path(data_root).expanduser()
    if download:
        from advimage.data.download import download as fetch

        return fetch(name, root, split=split, progress=progress)
    if root is None and name.lower() in SOURCES:
        from advimage.data.download import default_root

        cached = default_root(name)
        return cached if cached.is_dir() else None
    return root


def load_dataset(
    name: str = "digits",
    split: str = "train",
    *,
    data_root: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
    classes: Sequence[str] | None = None,
    class_map: Mapping[str, int | str] | None = None,
    download: bool = False,
    download_progress: bool = False,
    **kw: object,
) -> ImageDataset:
    """Load dataset ``name`` for ``split`` ("train" or "test").

    Args:
        name: one of :func:`list_datasets` (``digits`` needs no files).
        split: ``"train"`` or ``"test"`` (``folder`` also ``"all"``: a tree without splits).
        data_root: folder holding the files (datasets that need files raise a one-line
            ``ValueError`` saying where to put them when it is missing).
        image_size: square output size; datasets resize to it when given.
        classes: the class names of the model the data is for (None: unknown). Datasets of
            class folders label by these names; for the others a model that orders the same
            classes differently is refused.
        class_map: explicit ``{folder: class index or name}`` (folder datasets only).
        download: fetch the dataset's official files (SHA-256 checked) into ``data_root``, or
            into the cache folder (``$ADVIMAGE_CACHE/<name>``, ``~/.cache/advimage/<name>``)
            when it is None; see :mod:`advimage.data.download`. Without it, a None
            ``data_root`` still finds an earlier download in the cache folder.
        download_progress: show a progress bar while downloading.
        **kw: dataset-specific options (e.g. ``channels=1`` for ``folder``).
    """
    factory = DATASETS.get(name)
    splits = dataset_splits(name)
    if split not in splits:
        raise UserInputError(f"split must be one of {', '.join(splits)} for dataset {name!r}, "
                             f"got {split!r}")
    if image_size is not None and (isinstance(image_size, bool)
                                   or not isinstance(image_size, int) or image_size < 1):
        raise UserInputError(f"image_size must be a positive int or None, got {image_size!r}")
    if class_map and not dataset_accepts(name, "class_map"):
        raise UserInputError(f"a class map applies to datasets of class folders (folder), not "
                             f"to {name!r}")
    if class_map:
        kw["class_map"] = dict(class_map)
    by_name = bool(classes) and dataset_accepts(name, "classes")
    if by_name:
        kw["classes"] = [str(c) for c in classes or ()]
    root = _data_root(name, split, data_root, download, download_progress)
    ds = factory(split, data_root=root, image_size=image_size, **kw)
    if classes and not by_name:
        _check_class_order(ds, classes)
    return ds
