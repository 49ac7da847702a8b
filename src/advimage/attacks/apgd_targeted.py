"""APGD-T: Auto-PGD with targeted losses against the runner-up classes.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020. APGD-T runs APGD (:class:`advimage.attacks.apgd.APGD`)
with the targeted DLR loss against each of the top-k other classes in turn, each run only on
the points still classified correctly; aiming at one class at a time escapes the gradient
masking that defeats untargeted CE/DLR, which makes it the strongest single member of
AutoAttack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from advimage.attacks.apgd import APGD
from advimage.attacks.base import Model, check_positive_int
from advimage.attacks.registry import register_attack
from advimage.attacks.restarts import attack_remaining

__all__ = ["APGDT"]


@register_attack("apgd-t")
@dataclass
class APGDT(APGD):
    """Targeted APGD over the top-k other classes (APGD-T of Croce & Hein, 2020).

    Without ``target``: for each of the ``n_target_classes`` classes with the highest clean
    logits after the predicted one, run APGD with the *targeted* loss towards that class on the
    points still classified correctly; success means misclassified (any class), so APGD-T is an
    untargeted attack that uses targeted losses to escape the gradient masking of CE/DLR. With
    ``target``: one targeted run (per restart) towards ``target``, success means hitting it.

    Args (besides APGD's):
        loss: ``"dlr"`` (targeted DLR, default) or ``"ce"`` (targeted cross-entropy).
        n_target_classes: How many runner-up classes to try (9 in AutoAttack); capped at
            ``num_classes - 1``.
    """

    name: ClassVar[str] = "apgd-t"
    loss: str = "dlr"
    n_target_classes: int = 9

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self.n_target_classes, "n_target_classes")

    def _run(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        if target is not None:
            return super()._run(model, x, y, target, generator)
        best = self._start(model, x, y, None)
        with torch.no_grad():
            order = model(x).argsort(dim=1, descending=True)  # (B, K) classes by clean logit
        n_targets = min(self.n_target_classes, order.shape[1] - 1)
        for j in range(1, n_targets + 1):
            # j-th runner-up; differs from y on every point not yet done (there y is top-1)
            run = self._runner(model, x, y, None, order[:, j], generator)
            attack_remaining(best, run, restarts=self.restarts)
        return best.x
