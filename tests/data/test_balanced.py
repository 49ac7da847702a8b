"""ImageDataset.balanced: deterministic class-balanced prefixes (CIFAR-10 is sorted by class)."""

from __future__ import annotations

import pytest
import torch

from advimage.data import ImageDataset


def _sorted_dataset(per_class: int = 7, k: int = 3) -> ImageDataset:
    y = torch.arange(k).repeat_interleave(per_class)  # sorted by class, like CIFAR-10's folders
    x = torch.rand(len(y), 1, 2, 2)
    return ImageDataset.from_tensors(x, y, [str(c) for c in range(k)])


def test_balanced_interleaves_classes() -> None:
    ds = _sorted_dataset()
    sub = ds.balanced(9)
    assert sub.labels.tolist() == [0, 1, 2] * 3
    # the j-th image of class c is the source's j-th image of class c
    x_all, _ = ds.tensors()
    x_sub, _ = sub.tensors()
    torch.testing.assert_close(x_sub[4], x_all[7 + 1])  # class 1, rank 1


def test_balanced_clips_and_rejects_bad_size() -> None:
    ds = _sorted_dataset(per_class=2)
    assert len(ds.balanced(100)) == 6
    with pytest.raises(ValueError):
        ds.balanced(0)
