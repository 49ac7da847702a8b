"""scikit-learn's handwritten digits (Alpaydin & Kaynak, 1998, UCI "Optical Recognition of
Handwritten Digits"): 1,797 8x8 grey images with values 0..16, embedded in scikit-learn.

The default dataset: it needs no download and no data root, so examples and tests run offline.
The split is fixed and stratified: per class, a seed-0 permutation puts ``round(0.2 * n_class)``
images in the test set, giving exactly 1,438 train and 359 test images (indices kept in the
original order inside each split). Images are scaled by 1/16 to [0, 1], shape (1, 8, 8).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from advimage.data.base import ImageDataset, uint8_loader
from advimage.data.registry import register_dataset

__all__ = ["DIGITS_SIZES", "digits_split_indices", "load_digits_dataset"]

_TEST_FRACTION = 0.2  # share of each class held out for test
_SEED = 0  # seed of the split permutation (numpy PCG64)
_MAX_VALUE = 16.0  # scikit-learn digits hold counts 0..16 per 4x4 block
DIGITS_SIZES = {"train": 1438, "test": 359}


@lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.uint8)  # (1797, 8, 8), exact ints 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)  # (1797,)
    return images, labels


def digits_split_indices(labels: np.ndarray, split: str) -> np.ndarray:
    """Sorted indices of ``split`` in the fixed stratified 80/20 split (see module doc)."""
    rng = np.random.default_rng(_SEED)
    test = []
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        n_test = int(round(_TEST_FRACTION * members.size))
        test.append(rng.permutation(members)[:n_test])
    is_test = np.zeros(labels.size, dtype=bool)
    is_test[np.concatenate(test)] = True
    return np.flatnonzero(is_test if split == "test" else ~is_test)


@register_dataset("digits")
def load_digits_dataset(
    split: str = "train", *, data_root: Path | None = None, image_size: int | None = None,
) -> ImageDataset:
    """scikit-learn digits: 1,438 train / 359 test images, shape (1, 8, 8), classes "0".."9".

    ``data_root`` is ignored (the data ships with scikit-learn); ``image_size`` resizes batches.
    """
    images, labels = _raw()
    idx = digits_split_indices(labels, split)
    sel_images = np.ascontiguousarray(images[idx])  # (N, 8, 8) uint8
    side = image_size or 8
    loader = uint8_loader(sel_images, scale=_MAX_VALUE, channels_last=False,
                          image_size=image_size)
    return ImageDataset("digits", split, [str(d) for d in range(10)], labels[idx],
                        (1, side, side), loader)
