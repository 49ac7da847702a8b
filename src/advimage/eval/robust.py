"""Robust accuracy of a model under a grid of attacks and budgets, streamed over batches.

A sample counts as robust for an attack when the model classifies both the clean image and the
attack's output correctly (the RobustBench convention; Croce et al., 2021). Every batch is
counted by :mod:`advimage.eval.batch`, the same core that the resumable
:func:`advimage.eval.runner.run_evaluation` uses, so both give identical counts for the same
seed. Only batches are ever in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from advimage.eval.batch import BatchOutcome, attack_batch, batch_seed, predict
from advimage.eval.store import DB_NAME, ResultStore

__all__ = ["AttackSpec", "Examples", "RobustRow", "evaluate_robustness", "rows_from_run"]


@dataclass
class AttackSpec:
    """One column of the evaluation: a label and a built attack (any ``attack(model, x, y)``)."""

    label: str
    attack: Callable[..., torch.Tensor]
    eps: float | None = None
    norm: str | None = None


@dataclass
class RobustRow:
    """Running counts of one attack over the batches seen so far."""

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

    def add(self, outcome: BatchOutcome) -> None:
        """Count one batch (:func:`advimage.eval.batch.attack_batch`'s outcome)."""
        n, clean, robust, fooled, dist = outcome.counts()
        self.n += n
        self.clean_correct += clean
        self.robust_correct += robust
        self.seconds += outcome.seconds
        if fooled:
            self._dist_sum += dist
            self._dist_n += fooled
            self.mean_distance = self._dist_sum / self._dist_n

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
    seed: int | None = None,
) -> tuple[list[RobustRow], Examples | None]:
    """Clean and robust accuracy for every attack in ``attacks``.

    Args:
        model: classifier taking [0, 1] images and returning logits.
        batches: iterable of ``(x, y)``; streamed, never concatenated.
        attacks: the attack grid (one row of the result each).
        keep_examples: keep this many images of the first batch with their adversarials.
        on_batch: called after each batch with the running rows (for incremental writes).
        seed: derive every batch's seeds as :func:`advimage.eval.runner.run_evaluation` does
            for a run with this seed, defense ``none`` and attack keys equal to the labels
            (same batches -> same counts). ``None``: each attack runs with its own seed on
            every batch and the forward passes use the global RNG as it is.
    """
    dev = torch.device(device)
    rows = [RobustRow(a.label, a.norm, a.eps) for a in attacks]
    examples: Examples | None = None
    was_training = model.training
    model.eval()
    bar = tqdm(batches, desc="robust eval", total=total_batches, disable=not progress, leave=False)
    try:
        for b, (x, y) in enumerate(bar):
            x, y = x.to(dev), y.to(dev)  # (B, C, H, W), (B,)
            s = None if seed is None else batch_seed(seed, b, "none", "clean")
            pred = predict(model, x, seed=s)  # (B,)
            if keep_examples and examples is None:
                k = min(keep_examples, len(x))
                examples = Examples(x[:k].cpu(), y[:k].cpu(), pred[:k].cpu(), {}, {})
            for spec, row in zip(attacks, rows, strict=True):
                s = None if seed is None else batch_seed(seed, b, "none", spec.label)
                out = attack_batch(model, spec.attack, x, y, pred, norm=spec.norm, seed=s)
                row.add(out)
                if examples is not None and b == 0:
                    k = len(examples.x)
                    examples.x_adv[spec.label] = out.x_adv[:k].detach().cpu()
                    examples.pred_adv[spec.label] = out.pred_adv[:k].cpu()
            bar.set_postfix({r.attack: f"{r.robust_accuracy:.3f}" for r in rows[:3]})
            if on_batch is not None:
                on_batch(b, rows)
    finally:
        model.train(was_training)
    return rows, examples


def rows_from_run(run_dir: str | Path, defense: str | None = None) -> list[RobustRow]:
    """The rows of one defense (default: the first) of a run directory, in config order.

    Labels read ``LABEL@EPS`` with eps to 5 significant digits (``pgd@0.03137``, as
    ``advimage eval robust`` prints them); an attack that fooled no sample has
    ``mean_distance`` 0.0, as :class:`RobustRow` counts it.
    """
    path = Path(run_dir) / DB_NAME
    if not path.is_file():
        raise ValueError(f"not a run directory (no {DB_NAME}): {Path(run_dir)}")
    with ResultStore(path) as store:
        results = store.results()
    if defense is None and results:
        defense = results[0]["defense"]
    rows = []
    for r in results:
        if r["defense"] != defense:
            continue
        n = int(r["n"])
        rows.append(RobustRow(
            f"{r['label']}@{r['eps']:.5g}", r["norm"], r["eps"], n,
            clean_correct=round(r["clean_accuracy"] * n),
            robust_correct=round(r["robust_accuracy"] * n),
            mean_distance=r["mean_distance"] or 0.0, seconds=r["seconds"] or 0.0,
        ))
    return rows
