"""Clean top-1 accuracy of a classifier over a stream of batches (never the whole set in memory).

Below training and the eval harness, so both measure accuracy with this one implementation
(:mod:`advimage.eval.accuracy` re-exports it).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from advimage.validation import check_batch_size

__all__ = ["dataset_accuracy", "evaluate_accuracy", "predict_batches"]


class _Batched(Protocol):
    """What :func:`dataset_accuracy` needs of a dataset (``advimage.data.ImageDataset``)."""

    def __len__(self) -> int: ...

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


@torch.no_grad()
def predict_batches(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "predict",
    total: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted and true labels for every sample of ``batches``; the model's mode is restored."""
    was_training = model.training
    model.eval()
    preds, labels = [], []
    try:
        for x, y in tqdm(batches, desc=desc, disable=not progress, total=total, leave=False):
            logits = model(x.to(device, non_blocking=True))
            preds.append(logits.argmax(1).cpu())
            labels.append(y.cpu())
    finally:
        model.train(was_training)
    if not preds:
        raise ValueError("no batches to evaluate (empty dataset?)")
    return torch.cat(preds), torch.cat(labels)


def evaluate_accuracy(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device | str = "cpu",
    progress: bool = False,
    total: int | None = None,
) -> float:
    """Top-1 accuracy in [0, 1]."""
    pred, y = predict_batches(model, batches, device, progress, desc="evaluate", total=total)
    return float((pred == y).float().mean())


def dataset_accuracy(
    model: nn.Module,
    dataset: _Batched,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> float:
    """Top-1 accuracy in [0, 1] over every image of ``dataset``, ``batch_size`` at a time.

    Raises:
        ValueError: ``batch_size`` is not an integer >= 1 (one line, before any work).
    """
    batch_size = check_batch_size(batch_size)
    total = -(-len(dataset) // batch_size)  # batches, for the progress bar
    return evaluate_accuracy(model, dataset.batches(batch_size), device, progress, total=total)
