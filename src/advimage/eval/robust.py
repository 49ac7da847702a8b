"""Robust accuracy of a model under a grid of attacks and budgets, streamed over batches.

A sample counts as robust for an attack when the model classifies both the clean image and the
attack's output correctly (the RobustBench convention). Only batches are ever in memory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from advimage.threat import ThreatModel

__all__ = ["AttackSpec", "RobustRow", "evaluate_robustness", "Examples"]


@dataclass
class AttackSpec:
    """One column of the evaluation: a label and a built attack (any ``attack(model, x, y)``)."""

    label: str
    attack: Callable[..., torch.Tensor]
    eps: float | None = None
    norm: str | None = None


@dataclass
class RobustRow:
    attack: str
    norm: str | None
    eps: float | None
    n: int = 0
    clean_correct: int = 0
    robust_correct: int = 0
    mean_distance: float = 0.0  # mean perturbation norm over successful adversarial images
    seconds: float = 0.0
    _dist_sum: float = field(default=0.0, repr=False)
    _dist_n: int = field(default=0, repr=False)

    @property
    def clean_accuracy(self) -> float:
        return self.clean_correct / self.n if self.n else float("nan")

    @property
    def robust_accuracy(self) -> float:
        return self.robust_correct / self.n if self.n else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "attack": self.attack,
            "norm": self.norm,
            "eps": self.eps,
            "n": self.n,
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "mean_distance": self.mean_distance,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class Examples:
    """A few images kept for image grids (first batch)."""

    x: torch.Tensor
    y: torch.Tensor
    pred_clean: torch.Tensor
    x_adv: dict[str, torch.Tensor]
    pred_adv: dict[str, torch.Tensor]


def _distance(norm: str | None, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """Per-sample perturbation norm (L-inf when the spec names no norm), via the threat model."""
    return ThreatModel(norm or "linf", math.inf).distance(x, x_adv)


def evaluate_robustness(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    attacks: Sequence[AttackSpec],
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
    total_batches: int | None = None,
    keep_examples: int = 0,
    on_batch: Callable[[int, list[RobustRow]], None] | None = None,
) -> tuple[list[RobustRow], Examples | None]:
    """Clean and robust accuracy for every attack in ``attacks``.

    Args:
        model: classifier taking [0, 1] images and returning logits.
        batches: iterable of ``(x, y)``; streamed, never concatenated.
        attacks: the attack grid (one row of the result each).
        keep_examples: keep this many images of the first batch with their adversarials.
        on_batch: called after each batch with the running rows (for incremental writes).
    """
    rows = [RobustRow(a.label, a.norm, a.eps) for a in attacks]
    examples: Examples | None = None
    was_training = model.training
    model.eval()
    bar = tqdm(batches, desc="robust eval", total=total_batches, disable=not progress, leave=False)
    try:
        for b, (x, y) in enumerate(bar):
            x, y = x.to(device), y.to(device)
            with torch.no_grad():
                pred = model(x).argmax(1)
            ok = pred == y
            if keep_examples and examples is None:
                k = min(keep_examples, len(x))
                examples = Examples(x[:k].cpu(), y[:k].cpu(), pred[:k].cpu(), {}, {})
            for spec, row in zip(attacks, rows, strict=True):
                t0 = time.perf_counter()
                x_adv = spec.attack(model, x, y)
                with torch.no_grad():
                    pred_adv = model(x_adv).argmax(1)
                row.seconds += time.perf_counter() - t0
                robust = ok & (pred_adv == y)
                row.n += len(y)
                row.clean_correct += int(ok.sum())
                row.robust_correct += int(robust.sum())
                fooled = ok & ~robust
                if fooled.any():
                    row._dist_sum += float(_distance(spec.norm, x[fooled], x_adv[fooled]).sum())
                    row._dist_n += int(fooled.sum())
                    row.mean_distance = row._dist_sum / row._dist_n
                if examples is not None and b == 0:
                    k = len(examples.x)
                    examples.x_adv[spec.label] = x_adv[:k].detach().cpu()
                    examples.pred_adv[spec.label] = pred_adv[:k].cpu()
            bar.set_postfix({r.attack: f"{r.robust_accuracy:.3f}" for r in rows[:3]})
            if on_batch is not None:
                on_batch(b, rows)
    finally:
        model.train(was_training)
    return rows, examples
