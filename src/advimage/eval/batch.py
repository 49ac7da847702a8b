"""One batch under one attack: the per-batch core of every robust-accuracy evaluation.

:func:`advimage.eval.robust.evaluate_robustness` (in memory) and
:func:`advimage.eval.runner.run_evaluation` (SQLite store, resumable; ``advimage run`` and
``advimage eval robust``) both count a batch with :func:`predict` and :func:`attack_batch`, so
they agree on every definition:

* *clean-correct*: the model classifies the clean image correctly;
* *robust*: clean-correct **and** the model classifies the attack's output correctly (the
  RobustBench convention, Croce et al., 2021, "RobustBench: a standardized adversarial
  robustness benchmark"): a misclassified clean image never counts as robust;
* *fooled* (a successful adversarial): clean-correct but not robust; the mean distance is the
  mean perturbation norm (the attack's norm, L-inf if it names none) over fooled samples only;
* *seconds*: the attack plus the forward pass on its output.

Seeding: with a seed, the attack runs with that seed (its random starts and the model's
randomness inside it) and the forward passes run in a forked global RNG seeded with it, so a
randomized defense gives the same predictions on every rerun; :func:`batch_seed` derives the
seeds of one batch from the run seed, the batch index and names, which makes a resumed batch
bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from advimage.threat import ThreatModel

__all__ = ["BatchOutcome", "attack_batch", "batch_seed", "predict", "seeded"]


def batch_seed(run_seed: int, batch: int, *parts: str) -> int:
    """A 63-bit seed derived from the run seed, the batch index and names (defense, attack)."""
    text = "|".join([str(int(run_seed)), str(int(batch)), *parts])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


@contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed the global RNG in a forked scope (randomized defenses draw from it); ``None``: as is."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def predict(model: nn.Module, x: Tensor, *, seed: int | None = None) -> Tensor:
    """Predicted classes ``(B,)`` of ``x`` ``(B, C, H, W)``, without gradients."""
    with seeded(seed, x.device), torch.no_grad():
        return model(x).argmax(1)  # (B,)


def _with_seed(attack: Callable[..., Tensor], seed: int | None) -> Callable[..., Tensor]:
    """``attack`` with its ``seed`` field replaced (attacks are dataclasses); others unchanged."""
    if seed is None or not dataclasses.is_dataclass(attack) or isinstance(attack, type):
        return attack
    if "seed" not in {f.name for f in dataclasses.fields(attack)}:
        return attack
    return dataclasses.replace(attack, seed=seed)


@dataclass
class BatchOutcome:
    """Per-sample results of one batch under one attack (tensors on the batch's device)."""

    y: Tensor  # (B,) labels
    pred_clean: Tensor  # (B,) prediction on the clean images
    x_adv: Tensor  # (B, C, H, W) the attack's output
    pred_adv: Tensor  # (B,) prediction on x_adv
    distance: Tensor  # (B,) perturbation norm ||x_adv - x|| of every sample
    seconds: float  # attack + adversarial forward pass, wall clock

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def clean_correct(self) -> Tensor:
        """``(B,)`` bool: the clean image is classified correctly."""
        return self.pred_clean == self.y

    @property
    def robust(self) -> Tensor:
        """``(B,)`` bool: clean-correct and adversarial-correct (RobustBench)."""
        return self.clean_correct & (self.pred_adv == self.y)

    @property
    def fooled(self) -> Tensor:
        """``(B,)`` bool: a successful adversarial (clean-correct, adversarial-wrong)."""
        return self.clean_correct & ~self.robust

    def counts(self) -> tuple[int, int, int, int, float]:
        """``(n, clean_correct, robust_correct, fooled, distance sum over fooled)``.

        The distance sum is accumulated in float64 (the store averages float64 values too).
        """
        fooled = self.fooled
        dist = float(self.distance[fooled].double().sum()) if bool(fooled.any()) else 0.0
        return (self.n, int(self.clean_correct.sum()), int(self.robust.sum()),
                int(fooled.sum()), dist)


def attack_batch(
    model: nn.Module,
    attack: Callable[..., Tensor],
    x: Tensor,
    y: Tensor,
    pred_clean: Tensor,
    *,
    norm: str | None = None,
    seed: int | None = None,
    source: nn.Module | None = None,
) -> BatchOutcome:
    """Attack one batch and classify the result.

    Args:
        model: the (defended) classifier whose accuracy is measured.
        attack: ``attack(model, x, y) -> x_adv``; a dataclass attack with a ``seed`` field runs
            with ``seed`` instead of its own when ``seed`` is given.
        x, y: images ``(B, C, H, W)`` in [0, 1] and labels ``(B,)`` on the model's device.
        pred_clean: ``predict(model, x)`` of this batch (computed once for all attacks).
        norm: ``"linf"``, ``"l2"``, ``"l1"`` or ``"l0"`` (changed pixels), the norm of the
            distance; ``None`` means L-inf.
        seed: seed of this batch and attack (:func:`batch_seed`); ``None`` keeps the attack's
            seed and the global RNG as they are.
        source: craft the adversarials on this model instead (transfer attacks).
    """
    t0 = time.perf_counter()
    with seeded(seed, x.device):
        x_adv = _with_seed(attack, seed)(source if source is not None else model, x, y)
    pred_adv = predict(model, x_adv, seed=seed)  # (B,)
    seconds = time.perf_counter() - t0
    threat = ThreatModel(norm or "linf", math.inf)  # type: ignore[arg-type]  # checked there
    distance = threat.distance(x, x_adv)  # (B,)
    return BatchOutcome(y, pred_clean, x_adv, pred_adv, distance, seconds)
