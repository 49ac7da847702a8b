"""CIFAR-10 (Krizhevsky, 2009, "Learning Multiple Layers of Features from Tiny Images").

Two on-disk layouts are accepted under ``data_root``:

* the PNG ImageFolder tree ``<root>/{train,test}/<class>/<name>.png`` (the shared copy); the order
  is deterministic: classes airplane..truck, then file name. The 60k PNGs are decoded once, in
  parallel, into a ``uint8`` array ``(N, 32, 32, 3)`` and cached (see :mod:`advimage.data.cache`),
  so later loads take well under a second. Lossless ``.webp`` files are read the same way (a
  class-balanced subset packed by ``scripts/pack_cifar10.py`` to travel to a GPU machine);
* the python batches ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``
  (``data_root`` may be that folder or its parent), read with a restricted unpickler that
  cannot run code.

Only the ``uint8`` array stays in memory; batches are converted to float32 on the fly.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from advimage.data.base import ImageDataset, uint8_loader
from advimage.data.cache import cache_key, load_cached, save_cached
from advimage.data.registry import register_dataset
from advimage.data.safe_pickle import safe_load

__all__ = ["CIFAR10_CLASSES", "load_cifar10", "read_pickled_batch"]

log = logging.getLogger(__name__)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
_SIDE = 32  # CIFAR images are 32x32 RGB
_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def _missing(root: Path | None) -> ValueError:
    where = "data_root" if root is None else str(root)
    return ValueError(
        f"CIFAR-10 not found at {where}: pass data_root= pointing at a folder with either "
        "train/<class>/*.png and test/<class>/*.png (ImageFolder, classes airplane..truck) or "
        "the python batches cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} "
        "(the folder itself or its parent)"
    )


def _find_layout(root: Path, split: str) -> tuple[str, Path]:
    if not root.is_dir():
        raise _missing(root)
    for cand in (root, root / "cifar-10-batches-py"):
        if all((cand / b).is_file() for b in _BATCHES[split]):
            return "pickle", cand
    for cand in (root, root / "cifar10"):
        if (cand / split).is_dir() and any((cand / split / c).is_dir() for c in CIFAR10_CLASSES):
            return "folder", cand / split
    raise _missing(root)


# ---------------------------------------------------------------------- PNG ImageFolder layout
# PNG, or lossless WebP (about 25% smaller than PNG here: see scripts/pack_cifar10.py)
_SUFFIXES = (".png", ".webp")


def _list_pngs(split_dir: Path) -> tuple[list[str], np.ndarray, list[tuple[str, int, int]]]:
    """Image paths sorted by class then name, their labels and ``(rel, size, mtime)`` entries."""
    present = sorted(p.name for p in split_dir.iterdir() if p.is_dir()
                     and not p.name.startswith("."))
    if present != sorted(CIFAR10_CLASSES):
        raise ValueError(f"CIFAR-10 folder {split_dir} must hold exactly the class folders "
                         f"{', '.join(CIFAR10_CLASSES)}; found {', '.join(present) or 'none'}")
    files: list[str] = []
    labels: list[int] = []
    entries: list[tuple[str, int, int]] = []
    for k, cls in enumerate(CIFAR10_CLASSES):
        folder = os.path.join(split_dir, cls)
        with os.scandir(folder) as it:
            found = {e.name: e for e in it
                     if e.name.lower().endswith(_SUFFIXES) and e.is_file()}
        if not found:
            raise ValueError(f"CIFAR-10 class folder {folder} has no .png (or .webp) files")
        for name in sorted(found):
            e = found[name]
            st = e.stat()
            files.append(e.path)
            entries.append((f"{cls}/{name}", st.st_size, st.st_mtime_ns))
        labels.extend([k] * len(found))
    return files, np.asarray(labels, dtype=np.int64), entries


def _decode_into(out: np.ndarray, files: list[str], start: int, stop: int) -> None:
    for i in range(start, stop):
        path = files[i]
        try:
            with Image.open(path) as im:
                im.load()
                mode, size = im.mode, im.size
                arr = np.asarray(im)
        except (OSError, SyntaxError, ValueError) as exc:
            raise ValueError(f"cannot decode CIFAR-10 image {path}: {exc}") from None
        if mode != "RGB" or size != (_SIDE, _SIDE):
            raise ValueError(f"CIFAR-10 image {path} is {size[0]}x{size[1]} {mode}, "
                             f"expected {_SIDE}x{_SIDE} RGB")
        out[i] = arr


def decode_pngs(files: list[str], workers: int | None = None) -> np.ndarray:
    """Decode 32x32 RGB PNGs into ``(N, 32, 32, 3)`` uint8 using a thread pool."""
    out = np.empty((len(files), _SIDE, _SIDE, 3), dtype=np.uint8)
    workers = workers or min(8, os.cpu_count() or 1)
    chunk = max(1, -(-len(files) // (workers * 8)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_decode_into, out, files, s, min(s + chunk, len(files)))
                   for s in range(0, len(files), chunk)]
        for f in futures:
            f.result()  # re-raises the first decode error, naming the file
    return out


def _load_folder(split_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    files, labels, entries = _list_pngs(split_dir)
    name = f"cifar10-{split}-{cache_key(split_dir, entries, extra='cifar10-uint8-v1')}"
    cached = load_cached(name)
    if cached is not None and cached.dtype == np.uint8 \
            and cached.shape == (len(files), _SIDE, _SIDE, 3):
        return cached, labels
    log.info("decoding %d CIFAR-10 PNGs from %s (once; cached afterwards)", len(files), split_dir)
    images = decode_pngs(files)
    save_cached(name, images)
    return images, labels


# ---------------------------------------------------------------------- pickled python batches
def read_pickled_batch(path: Path, label_key: str, n_classes: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """One batch file of the python version of CIFAR-10/100 (read by the safe unpickler):
    images ``(N, 32, 32, 3)`` uint8 (a view) and labels ``(N,)`` from ``label_key``."""
    batch = safe_load(path)
    if not isinstance(batch, dict):
        raise ValueError(f"{path} must hold a dict, got {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labs = batch.get(label_key.encode(), batch.get(label_key))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * _SIDE * _SIDE:
        raise ValueError(f"{path}: 'data' must be a uint8 array of shape (N, 3072)")
    labs = np.asarray(labs if labs is not None else [], dtype=np.int64).reshape(-1)
    if labs.shape != (data.shape[0],) or (labs.size and (labs.min() < 0
                                                         or labs.max() >= n_classes)):
        raise ValueError(f"{path}: '{label_key}' must be {data.shape[0]} ints in "
                         f"[0, {n_classes - 1}]")
    # rows are 1024 R, 1024 G, 1024 B values: (N, 3, 32, 32) -> (N, 32, 32, 3)
    return data.reshape(-1, 3, _SIDE, _SIDE).transpose(0, 2, 3, 1), labs


def _load_pickles(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    chunks, labels = [], []
    for b in _BATCHES[split]:
        images, labs = read_pickled_batch(folder / b, "labels", 10)
        chunks.append(images)
        labels.append(labs)
    classes = list(CIFAR10_CLASSES)
    meta = folder / "batches.meta"
    if meta.is_file():
        names = safe_load(meta)
        names = names.get(b"label_names", names.get("label_names")) \
            if isinstance(names, dict) else None
        if not isinstance(names, list) or len(names) != 10:
            raise ValueError(f"{meta}: 'label_names' must be a list of 10 names")
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return np.ascontiguousarray(np.concatenate(chunks)), np.concatenate(labels), classes


@register_dataset("cifar10")
def load_cifar10(
    split: str = "train", *, data_root: Path | None = None, image_size: int | None = None,
) -> ImageDataset:
    """CIFAR-10: 50,000 train / 10,000 test images, shape (3, 32, 32), 10 classes."""
    if data_root is None:
        raise _missing(None)
    kind, where = _find_layout(Path(data_root), split)
    if kind == "folder":
        images, labels = _load_folder(where, split)
        classes = list(CIFAR10_CLASSES)
    else:
        images, labels, classes = _load_pickles(where, split)
    side = image_size or _SIDE
    loader = uint8_loader(images, scale=255.0, channels_last=True, image_size=image_size)
    return ImageDataset("cifar10", split, classes, labels, (3, side, side), loader)
