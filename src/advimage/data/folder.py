"""Any ImageFolder tree (one sub-folder per class, the layout popularised by torchvision's
``ImageFolder``): ``<root>/<split>/<class>/**/<image>`` when ``<root>/<split>`` exists, else
``<root>/<class>/**/<image>``.

Only the file list is built at load time; images are decoded per batch (a thread pool for larger
batches), so trees far bigger than memory work. Each image is converted to RGB (or L with
``channels=1``), its shorter side resized to ``image_size`` (antialiased bilinear) and the centre
square cropped, as in the usual "Resize + CenterCrop" evaluation pipeline.

Bad files: while indexing, every file's header is parsed and checked with PIL's ``verify``;
non-image and corrupt files are skipped and reported in ONE ``warnings.warn`` listing them.
Hidden files (``.name``) are ignored silently. A file that passes the check but still fails to
decode later (e.g. a truncated JPEG body) raises a one-line ``ValueError`` naming it.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from advimage.data.base import ImageDataset
from advimage.data.registry import register_dataset

__all__ = ["load_folder"]

_PARALLEL_MIN = 16  # batches at least this large are decoded with a thread pool
_MAX_LISTED = 20  # skipped files named in the warning (the count is always given)
_WORKERS = min(8, os.cpu_count() or 1)


def _probe(path: str) -> tuple[int, int] | None:
    """``(width, height)`` of a readable image, ``None`` for a non-image or corrupt file."""
    try:
        with Image.open(path) as im:
            size = im.size
            im.verify()  # checks structure (PNG chunk CRCs, ...) without a full decode
        return size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def _index(split_dir: Path) -> tuple[list[str], list[str], list[int], list[tuple[int, int]]]:
    classes = sorted(e.name for e in os.scandir(split_dir)
                     if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ValueError(f"image folder {split_dir} has no class sub-folders "
                         "(expected <root>/<class>/<image> or <root>/<split>/<class>/<image>)")
    candidates: list[tuple[str, int]] = []
    for k, cls in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(split_dir / cls, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            candidates.extend((os.path.join(dirpath, f), k) for f in sorted(filenames)
                              if not f.startswith("."))
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        sizes = list(pool.map(_probe, [p for p, _ in candidates]))
    files, labels, kept_sizes, skipped = [], [], [], []
    for (path, k), size in zip(candidates, sizes, strict=True):
        if size is None:
            skipped.append(path)
        else:
            files.append(path)
            labels.append(k)
            kept_sizes.append(size)
    if skipped:
        shown = ", ".join(os.path.relpath(p, split_dir) for p in skipped[:_MAX_LISTED])
        more = f" and {len(skipped) - _MAX_LISTED} more" if len(skipped) > _MAX_LISTED else ""
        warnings.warn(f"skipped {len(skipped)} non-image or corrupt file(s) in {split_dir}: "
                      f"{shown}{more}", stacklevel=4)
    if not files:
        raise ValueError(f"image folder {split_dir} contains no readable images")
    return classes, files, labels, kept_sizes


def _decode(path: str, mode: str, image_size: int | None) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im = im.convert(mode)
            if image_size is not None:
                w, h = im.size
                scale = image_size / min(w, h)
                new_w, new_h = max(image_size, round(w * scale)), max(image_size, round(h * scale))
                if (new_w, new_h) != (w, h):
                    im = im.resize((new_w, new_h), Image.Resampling.BILINEAR)
                left = int(round((new_w - image_size) / 2.0))
                top = int(round((new_h - image_size) / 2.0))
                im = im.crop((left, top, left + image_size, top + image_size))
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot decode image {path}: {exc}") from None
    return arr if arr.ndim == 3 else arr[:, :, None]  # (H, W, C)


@register_dataset("folder")
def load_folder(
    split: str = "train", *, data_root: Path | None = None, image_size: int | None = None,
    channels: int = 3,
) -> ImageDataset:
    """An ImageFolder tree of PNG/JPEG/... images, decoded lazily per batch.

    Args:
        split: uses ``data_root/<split>`` when that folder exists, else ``data_root`` itself.
        data_root: the tree's root folder.
        image_size: output side (pixels); required unless every image has the same size.
        channels: 3 (RGB) or 1 (greyscale, PIL mode ``L``).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if data_root is None:
        raise ValueError("the folder dataset needs data_root= pointing at an ImageFolder tree")
    root = Path(data_root)
    if not root.is_dir():
        raise ValueError(f"image folder {root} does not exist or is not a directory")
    split_dir = root / split if (root / split).is_dir() else root
    classes, files, labels, sizes = _index(split_dir)
    if image_size is None:
        distinct = sorted(set(sizes))
        if len(distinct) > 1:
            shown = ", ".join(f"{w}x{h}" for w, h in distinct[:5])
            raise ValueError(f"images in {split_dir} have different sizes ({shown}"
                             f"{', ...' if len(distinct) > 5 else ''}); pass image_size=")
        width, height = distinct[0]
    else:
        width = height = image_size
    mode = "RGB" if channels == 3 else "L"
    paths = np.asarray(files, dtype=object)

    def load(idx: np.ndarray) -> torch.Tensor:
        chosen = paths[idx].tolist()
        if len(chosen) >= _PARALLEL_MIN:
            with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
                arrays = list(pool.map(lambda p: _decode(p, mode, image_size), chosen))
        else:
            arrays = [_decode(p, mode, image_size) for p in chosen]
        batch = torch.from_numpy(np.stack(arrays))  # (B, H, W, C) uint8
        return batch.permute(0, 3, 1, 2).to(torch.float32).div_(255.0).contiguous()

    return ImageDataset("folder", split, classes, labels, (channels, height, width), load)
