"""Clean accuracy over a stream of batches (never the whole set in memory)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["predict_batches", "evaluate_accuracy"]


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
