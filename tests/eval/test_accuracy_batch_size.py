"""Accuracy over a dataset: a batch size below 1 is one line, not a ZeroDivisionError."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from advimage.eval.accuracy import dataset_accuracy
from advimage.validation import check_batch_size


class _Tiny:
    """Six 1x2x2 images whose label is the brightest pixel's index."""

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.rand(6, 1, 2, 2, generator=gen)
        self.y = self.x.flatten(1).argmax(1)

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, batch_size: int):
        for i in range(0, len(self.x), batch_size):
            yield self.x[i:i + batch_size], self.y[i:i + batch_size]


@pytest.mark.parametrize("bad", [0, -1, 2.0, "4", True, None])
def test_dataset_accuracy_refuses_bad_batch_sizes(bad) -> None:
    with pytest.raises(ValueError) as info:
        dataset_accuracy(nn.Flatten(), _Tiny(), batch_size=bad)
    assert str(info.value) == f"batch_size must be an integer >= 1, got {bad!r}"


@pytest.mark.parametrize("size", [1, 4, np.int64(6), 100])
def test_dataset_accuracy_counts_every_image(size) -> None:
    assert dataset_accuracy(nn.Flatten(), _Tiny(), batch_size=size) == 1.0  # argmax = label


def test_check_batch_size_names_the_option() -> None:
    assert check_batch_size(np.int32(3)) == 3 and type(check_batch_size(np.int32(3))) is int
    with pytest.raises(ValueError, match=r"^--batch-size must be an integer >= 1, got 0$"):
        check_batch_size(0, "--batch-size")
