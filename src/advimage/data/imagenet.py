"""ImageNet-1k in its usual folder layout, and Imagenette (ten of its classes) by the same code.

``imagenet``: ``<root>/val/<wnid>/*.JPEG`` (split ``test``) and ``<root>/train/<wnid>/*.JPEG``
(split ``train``). A label is the ImageNet-1k class index: the position of the WordNet id in
the sorted list of the 1000 ids, or the index a class map gives: ``<root>/classes.tsv`` when
present, or ``class_map=`` (a file, or ``{wnid: index or name}`` entries as ``--class-map``
gives). A map file has one ``wnid<TAB>index[<TAB>name]`` line per class, an optional header
line and ``#`` comments. The dataset always has the 1000 ImageNet-1k classes (more when the map
names a larger index), so its labels and names line up with a 1000-way model.

``imagenette``: the fast.ai subset as laid out in ``../shared/data/imagenette``, labels from its
``<root>/classes.tsv``; split ``test`` is ``imagenet-val/`` (genuine ILSVRC2012 validation
images), split ``train`` is ``val/`` minus every file whose name also appears in
``imagenet-val/`` (the held-out pool for thresholds and cache keys: mostly ImageNet *training*
images, so not for accuracy claims).

Only the file list is built at load time; images are decoded per batch (a thread pool for larger
batches) by :func:`advimage.data.images.decode_image`, converted to RGB (grayscale, CMYK, palette
images included), the shorter side resized to ``resize`` and the centre ``image_size`` square
cropped. ``image_size`` defaults to 224. ``resize`` defaults to ``image_size / 0.875`` (256 for
224, the standard evaluation crop) for ``imagenet`` and to ``image_size`` for ``imagenette``,
whose files are already centre-cropped to 224x224.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from advimage.data.base import ImageDataset
from advimage.data.images import decode_image
from advimage.data.registry import register_dataset
from advimage.errors import UserInputError
from advimage.models.imagenet_classes import (
    NUM_IMAGENET_CLASSES,
    imagenet_class_names,
    imagenet_wnids,
)

__all__ = ["load_imagenet", "load_imagenette", "read_class_map"]

CROP_FRACTION = 0.875  # centre crop / resized side of the standard ImageNet evaluation
DEFAULT_SIZE = 224
_EXTENSIONS = (".jpeg", ".jpg", ".png")
_PARALLEL_MIN = 16  # batches at least this large are decoded with a thread pool
_WORKERS = min(8, os.cpu_count() or 1)

ClassMap = dict[str, tuple[int, str | None]]  # wnid -> (class index, name or None)
# a wnid<TAB>index[<TAB>name] file, or {wnid: class index or ImageNet-1k name} (--class-map)
ClassMapArg = str | os.PathLike[str] | Mapping[str, int | str] | None


def read_class_map(path: str | os.PathLike[str]) -> ClassMap:
    """Read a ``wnid<TAB>index[<TAB>name]`` file (commas also separate); a first line whose
    index is not an integer is a header. ``UserInputError`` naming the file and line otherwise."""
    file = Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read class map {file}: {exc}") from None
    mapping: ClassMap = {}
    seen: dict[int, str] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in line.split("\t" if "\t" in line else ",")]
        if len(fields) < 2:
            raise UserInputError(f"{file} line {number}: expected wnid<TAB>index[<TAB>name]")
        try:
            index = int(fields[1])
        except ValueError:
            if not mapping and not seen:
                continue  # header line
            raise UserInputError(f"{file} line {number}: class index {fields[1]!r} is not an "
                                 "integer") from None
        if index < 0 or fields[0] in mapping or index in seen:
            raise UserInputError(f"{file} line {number}: negative or repeated wnid/index "
                                 f"({fields[0]}, {index})")
        seen[index] = fields[0]
        mapping[fields[0]] = (index, fields[2] if len(fields) > 2 and fields[2] else None)
    if not mapping:
        raise UserInputError(f"class map {file} lists no classes")
    return mapping


def _default_map() -> ClassMap:
    names = imagenet_class_names()
    return {w: (k, names[k]) for k, w in enumerate(imagenet_wnids())}


def _merge_map(base: ClassMap, extra: Mapping[str, int | str]) -> ClassMap:
    """``base`` with ``{wnid: index or ImageNet class name}`` entries (``--class-map``) on top."""
    lookup = {n.lower(): k for k, n in reversed(list(enumerate(imagenet_class_names())))}
    merged = dict(base)
    for wnid, target in extra.items():
        if isinstance(target, str) and not target.strip().isdigit():
            if target.strip().lower() not in lookup:
                raise UserInputError(f"class map: {target!r} (for {wnid}) is not an ImageNet-1k "
                                     "class name; give the class index")
            merged[str(wnid)] = (lookup[target.strip().lower()], None)
        else:
            index = int(target)
            if index < 0:
                raise UserInputError(f"class map: negative class index {index} for {wnid}")
            merged[str(wnid)] = (index, None)
    return merged


def _class_map(base: ClassMap, class_map: object) -> ClassMap:
    """The class map from ``class_map``: a file (replaces ``base``), a mapping (updates it)."""
    if class_map is None:
        return base
    if isinstance(class_map, Mapping):
        return _merge_map(base, class_map)
    if isinstance(class_map, (str, os.PathLike)):
        return read_class_map(class_map)
    raise UserInputError(f"class_map must be a file path or a mapping, got "
                         f"{type(class_map).__name__}")


def _class_names(mapping: ClassMap) -> list[str]:
    """The 1000 ImageNet names (more if the map names a larger index), the map's names first."""
    count = max(NUM_IMAGENET_CLASSES, 1 + max(k for k, _ in mapping.values()))
    names = imagenet_class_names() + [f"class {k}" for k in range(NUM_IMAGENET_CLASSES, count)]
    for index, name in mapping.values():
        if name:
            names[index] = name
    return names


def _list_files(split_dir: Path, mapping: ClassMap,
                exclude: frozenset[str] = frozenset()) -> tuple[list[str], list[int]]:
    """Image files under ``split_dir/<wnid>/`` (sorted) and their class indices."""
    if not split_dir.is_dir():
        raise UserInputError(f"image folder {split_dir} does not exist")
    wnids = sorted(e.name for e in os.scandir(split_dir)
                   if e.is_dir() and not e.name.startswith("."))
    if not wnids:
        raise UserInputError(f"image folder {split_dir} has no <wnid> class sub-folders")
    unknown = [w for w in wnids if w not in mapping]
    if unknown:
        raise UserInputError(f"class folder {split_dir / unknown[0]} is not in the class map "
                             f"({len(unknown)} unknown); pass class_map= (wnid<TAB>index file)")
    files: list[str] = []
    labels: list[int] = []
    for wnid in wnids:
        for dirpath, dirnames, filenames in os.walk(split_dir / wnid, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if (name.lower().endswith(_EXTENSIONS) and not name.startswith(".")
                        and name not in exclude):
                    files.append(os.path.join(dirpath, name))
                    labels.append(mapping[wnid][0])
    if not files:
        raise UserInputError(f"image folder {split_dir} contains no .JPEG/.jpg/.png images")
    return files, labels


def _sizes(image_size: int | None, resize: int | None, default_fraction: float) -> tuple[int, int]:
    size = DEFAULT_SIZE if image_size is None else int(image_size)
    side = round(size / default_fraction) if resize is None else resize
    if isinstance(side, bool) or not isinstance(side, int) or side < size:
        raise UserInputError(f"resize must be an int >= image_size ({size}), got {resize!r}")
    return size, side


def _make_dataset(name: str, split: str, files: list[str], labels: list[int],
                  classes: list[str], size: int, side: int) -> ImageDataset:
    paths = np.asarray(files, dtype=object)
    offset = int(round((side - size) / 2.0))

    def decode(path: str) -> np.ndarray:
        arr = decode_image(path, "RGB", side)  # (side, side, 3) uint8
        return arr[offset : offset + size, offset : offset + size]

    def load(idx: np.ndarray) -> torch.Tensor:
        chosen = paths[idx].tolist()
        if len(chosen) >= _PARALLEL_MIN:
            with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
                arrays = list(pool.map(decode, chosen))
        else:
            arrays = [decode(p) for p in chosen]
        batch = torch.from_numpy(np.stack(arrays))  # (B, H, W, 3) uint8
        return batch.permute(0, 3, 1, 2).to(torch.float32).div_(255.0).contiguous()

    return ImageDataset(name, split, classes, labels, (3, size, size), load)


def _root(name: str, data_root: Path | None) -> Path:
    if data_root is None:
        raise UserInputError(f"the {name} dataset needs data_root= (--data-root) pointing at "
                             "its folder")
    root = Path(data_root)
    if not root.is_dir():
        raise UserInputError(f"{name} data root {root} does not exist or is not a directory")
    return root


@register_dataset("imagenet")
def load_imagenet(
    split: str = "test", *, data_root: Path | None = None, image_size: int | None = None,
    resize: int | None = None, class_map: ClassMapArg = None,
) -> ImageDataset:
    """ImageNet-1k from ``<root>/val/<wnid>/`` (``test``) or ``<root>/train/<wnid>/`` (``train``).

    Args:
        split: ``"test"`` (the validation images) or ``"train"``.
        data_root: the folder holding ``val/`` and/or ``train/``.
        image_size: output side (default 224).
        resize: shorter side before the centre crop (default ``image_size / 0.875``).
        class_map: a ``wnid<TAB>index[<TAB>name]`` file replacing the default map
            (``<root>/classes.tsv`` if it exists, else the sorted 1000 ImageNet-1k WordNet
            ids), or ``{wnid: index or ImageNet-1k class name}`` entries added to it.
    """
    root = _root("imagenet", data_root)
    tsv = root / "classes.tsv"
    mapping = _class_map(read_class_map(tsv) if tsv.is_file() else _default_map(), class_map)
    size, side = _sizes(image_size, resize, CROP_FRACTION)
    files, labels = _list_files(root / ("val" if split == "test" else "train"), mapping)
    return _make_dataset("imagenet", split, files, labels, _class_names(mapping), size, side)


@register_dataset("imagenette")
def load_imagenette(
    split: str = "test", *, data_root: Path | None = None, image_size: int | None = None,
    resize: int | None = None, class_map: ClassMapArg = None,
) -> ImageDataset:
    """Imagenette with ImageNet-1k labels: ``test`` = ``imagenet-val/``, ``train`` = ``val/``
    minus the files also in ``imagenet-val/``.

    Args:
        split: ``"test"`` (500 genuine ImageNet validation images) or ``"train"`` (held out).
        data_root: the folder holding ``classes.tsv``, ``imagenet-val/`` and ``val/``.
        image_size: output side (default 224).
        resize: shorter side before the centre crop (default ``image_size``).
        class_map: the ``wnid<TAB>index<TAB>name`` file (default ``<root>/classes.tsv``), or
            ``{wnid: index or ImageNet-1k class name}`` entries added to it.
    """
    root = _root("imagenette", data_root)
    tsv = root / "classes.tsv"
    if isinstance(class_map, (str, os.PathLike)):
        tsv, class_map = Path(class_map), None
    if not tsv.is_file():
        raise UserInputError(f"imagenette needs its class map {tsv} (wnid, ImageNet-1k "
                             "index, name)")
    mapping = _class_map(read_class_map(tsv), class_map)
    size, side = _sizes(image_size, resize, 1.0)
    test_dir = root / "imagenet-val"
    if split == "test":
        files, labels = _list_files(test_dir, mapping)
    else:
        held = frozenset(p.name for p in test_dir.glob("*/*")) if test_dir.is_dir() else frozenset()
        files, labels = _list_files(root / "val", mapping, exclude=held)
    return _make_dataset("imagenette", split, files, labels, _class_names(mapping), size, side)
