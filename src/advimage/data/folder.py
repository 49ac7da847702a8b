"""Any ImageFolder tree (one sub-folder per class, the layout popularised by torchvision's
``ImageFolder``): ``<root>/<split>/<class>/**/<image>``, or ``<root>/<class>/**/<image>`` for a
tree without split folders, which is loaded only with ``split="all"`` (``--split all``): such a
tree may hold training images, so it is never taken silently as a test split.

Labels: with ``classes=`` (the model's class names) each class folder maps to the model's index
of the same name (case-insensitive); a folder the model lacks is an error unless ``class_map=``
places it (see :mod:`advimage.data.labels`). Without names, folders take their sorted position.
Empty class folders are skipped with a warning and never shift other labels. The mapping used is
kept as ``ds.label_mapping`` / ``ds.label_source`` (and in ``ds.describe()``).

The walk never follows a symbolic link to a directory below a class folder (skipped with a
warning; a class folder that is itself a link is used unless it points back up the tree), reads
only regular files, and stops with an error past ``max_files`` files (default
:data:`MAX_FILES`) or ``max_depth`` folder levels below a class folder (:data:`MAX_DEPTH`).

Only the file list is built at load time; images are decoded per batch (a thread pool for larger
batches), so trees far bigger than memory work. Decoding: :mod:`advimage.data.images` (mode
conversion, shorter side resized to ``image_size`` and centre crop, decompression-bomb refusal).
Non-image and corrupt files are skipped and reported in ONE ``warnings.warn``; hidden files
(``.name``) are ignored silently; a file that still fails to decode later raises a one-line
:class:`~advimage.errors.CorruptFileError` naming it.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from advimage.data.base import ImageDataset
from advimage.data.folder_walk import MAX_DEPTH, MAX_FILES, Scan, find_split_dir, scan_tree
from advimage.data.images import bomb_warnings_silenced, decode_image, probe_image
from advimage.data.labels import ClassMap, resolve_labels
from advimage.data.registry import register_dataset
from advimage.errors import UserInputError

__all__ = ["MAX_DEPTH", "MAX_FILES", "load_folder"]

_PARALLEL_MIN = 16  # batches at least this large are decoded with a thread pool
_MAX_LISTED = 20  # skipped files named in the warning (the count is always given)
_WORKERS = min(8, os.cpu_count() or 1)

_probe = probe_image  # names kept for modules that reuse them
_decode = decode_image


def _listed(paths: list[str], base: Path) -> str:
    shown = ", ".join(os.path.relpath(p, base) for p in paths[:_MAX_LISTED])
    return shown + (f" and {len(paths) - _MAX_LISTED} more" if len(paths) > _MAX_LISTED else "")


def _scan(split_dir: Path, max_files: int = MAX_FILES, max_depth: int = MAX_DEPTH) -> Scan:
    """Walk and probe ``split_dir``; one warning per kind of skipped entry."""
    scan = scan_tree(split_dir, max_files=max_files, max_depth=max_depth)
    with bomb_warnings_silenced(), ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        sizes = list(pool.map(probe_image, scan.candidates))
    scan.keep(sizes)
    if scan.skipped:
        warnings.warn(f"skipped {len(scan.skipped)} non-image or corrupt file(s) in {split_dir}: "
                      f"{_listed(scan.skipped, split_dir)}", stacklevel=4)
    if scan.links:
        warnings.warn(f"did not follow {len(scan.links)} symbolic link(s) to folders in "
                      f"{split_dir}: {_listed(scan.links, split_dir)}", stacklevel=4)
    if not scan.files:
        raise UserInputError(f"image folder {split_dir} contains no readable images")
    empty = scan.empty_folders()
    if empty:
        warnings.warn(f"skipped {len(empty)} empty class folder(s) in {split_dir}: "
                      f"{', '.join(empty)} (no readable images; other labels are unchanged)",
                      stacklevel=4)
    return scan


def _index(split_dir: Path) -> tuple[list[str], list[str], list[int], list[tuple[int, int]]]:
    """``(class folders, files, labels by sorted folder position, (width, height) sizes)``."""
    scan = _scan(split_dir)
    return list(scan.folders), scan.files, scan.folder_ids, scan.sizes


def _native_size(split_dir: Path, sizes: list[tuple[int, int]]) -> tuple[int, int]:
    distinct = sorted(set(sizes))
    if len(distinct) > 1:
        shown = ", ".join(f"{w}x{h}" for w, h in distinct[:5])
        raise UserInputError(f"images in {split_dir} have different sizes ({shown}"
                             f"{', ...' if len(distinct) > 5 else ''}); pass image_size= "
                             "(--image-size)")
    return distinct[0]


@register_dataset("folder")
def load_folder(
    split: str = "train", *, data_root: Path | None = None, image_size: int | None = None,
    channels: int = 3, classes: list[str] | None = None, class_map: ClassMap | None = None,
    max_files: int = MAX_FILES, max_depth: int = MAX_DEPTH,
) -> ImageDataset:
    """An ImageFolder tree of PNG/JPEG/... images, decoded lazily per batch.

    Args:
        split: ``"train"``/``"test"`` (``data_root/<split>``) or ``"all"`` (a tree without
            split folders: ``data_root/<class>/...``).
        data_root: the tree's root folder.
        image_size: output side (pixels); required unless every image has the same size.
        channels: 3 (RGB) or 1 (greyscale, PIL mode ``L``).
        classes: the model's class names; folders are matched to them by name.
        class_map: explicit ``{folder: class index or name}``, wins over names.
        max_files, max_depth: bounds of the walk (an error past them).
    """
    if channels not in (1, 3):
        raise UserInputError(f"channels must be 1 or 3, got {channels!r}")
    if data_root is None:
        raise UserInputError("the folder dataset needs data_root= pointing at an ImageFolder "
                             "tree")
    split_dir = find_split_dir(Path(data_root), split)
    scan = _scan(split_dir, max_files, max_depth)
    plan = resolve_labels(scan.folders, scan.used_folders(), str(split_dir),
                          classes=classes, class_map=class_map)
    labels = [plan.mapping[scan.folders[k]] for k in scan.folder_ids]
    width, height = (image_size, image_size) if image_size else _native_size(split_dir,
                                                                              scan.sizes)
    mode = "RGB" if channels == 3 else "L"
    paths = np.asarray(scan.files, dtype=object)

    def load(idx: np.ndarray) -> torch.Tensor:
        chosen = paths[idx].tolist()
        with bomb_warnings_silenced():
            if len(chosen) >= _PARALLEL_MIN:
                with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
                    arrays = list(pool.map(lambda p: decode_image(p, mode, image_size), chosen))
            else:
                arrays = [decode_image(p, mode, image_size) for p in chosen]
        batch = torch.from_numpy(np.stack(arrays))  # (B, H, W, C) uint8
        return batch.permute(0, 3, 1, 2).to(torch.float32).div_(255.0).contiguous()

    return ImageDataset("folder", split, plan.classes, labels, (channels, height, width), load,
                        label_mapping=plan.mapping, label_source=plan.source)


load_folder.splits = ("train", "test", "all")  # type: ignore[attr-defined]
