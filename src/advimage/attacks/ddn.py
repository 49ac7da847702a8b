"""Decoupled Direction and Norm attack (DDN), L2.

Rony, Hafemann, Oliveira, Ben Ayed, Sabourin & Granger, "Decoupling Direction and Norm for
Efficient Gradient-Based L2 Adversarial Attacks and Defenses", CVPR 2019 (Algorithm 1). DDN
walks along the normalized cross-entropy gradient and keeps the perturbation on a sphere whose
radius ``eps`` shrinks by ``(1 - gamma)`` while the iterate is adversarial and grows by
``(1 + gamma)`` while it is not; the smallest adversarial iterate is returned.

As in Foolbox 3.3's ``DDNAttack`` (the peer of the differential test): the step size follows a
cosine from 1 to 0.01, success is judged at the iterate whose gradient is taken (the paper
judges the point after the step: one more forward per step), and there is no quantization
(the paper's optional rounding to 8-bit values). Default 100 steps (the paper's budget for its
CIFAR-10/MNIST results; Foolbox defaults to 10).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from advimage.attacks.base import Model, check_positive_float, check_positive_int
from advimage.attacks.fmn import cosine_anneal
from advimage.attacks.loop import input_gradient
from advimage.attacks.losses import ce_loss, is_success
from advimage.attacks.minimal_norm import MinimalNormAttack, MinimalNormResult, Search, snap
from advimage.attacks.registry import register_attack
from advimage.lp_balls import lp_norms, rows

__all__ = ["DDN"]

_TINY = 1e-12
# Final step size of the cosine schedule (Foolbox 3.3).
_MIN_STEP = 0.01


@register_attack("ddn")
@dataclass
class DDN(MinimalNormAttack):
    """Decoupled Direction and Norm (Rony et al., CVPR 2019), a minimal L2 attack.

    Args:
        norm: Must be ``"l2"``.
        eps: ``inf`` (default): minimal norm; finite: results are shrunk into that ball.
        steps: Iterations (100).
        init_epsilon: Starting radius of the sphere (1.0, in pixel units of ``bounds``).
        gamma: Multiplicative radius update (0.05).
        max_stepsize: Initial step (1.0), annealed by a cosine to 0.01.
    """

    norms: ClassVar[tuple[str, ...]] = ("l2",)
    norm: str = "l2"
    steps: int = 100
    init_epsilon: float = 1.0
    gamma: float = 0.05
    max_stepsize: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self.steps, "steps")
        check_positive_float(self.init_epsilon, "init_epsilon")
        check_positive_float(self.max_stepsize, "max_stepsize")
        if not 0.0 < self.gamma < 1.0:
            raise ValueError(f"gamma must be in (0, 1), got {self.gamma!r}")

    def _result(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        generator: torch.Generator,
    ) -> MinimalNormResult:
        lo, hi = self.threat.bounds
        worst = lp_norms(torch.maximum(x - lo, hi - x), "l2")  # (B,)
        eps = torch.full_like(worst, float(self.init_epsilon))
        search = Search(x, "l2")
        delta = torch.zeros_like(x)
        for i in range(self.steps):
            alpha = cosine_anneal(self.max_stepsize, _MIN_STEP, i, self.steps)
            x_adv = snap(model, x + delta, x)
            grad, _, logits = input_gradient(model, x_adv, ce_loss, per_row=(y, target))
            adv = is_success(logits, y, target)
            search.offer(x_adv, adv)
            delta = delta + alpha * grad / rows(lp_norms(grad, "l2").clamp_min(_TINY), grad)
            eps = torch.minimum(eps * torch.where(adv, 1 - self.gamma, 1 + self.gamma), worst)
            scale = eps / lp_norms(delta, "l2").clamp_min(_TINY)  # onto the sphere of radius eps
            delta = ((x + delta * rows(scale, delta)).clamp(lo, hi) - x).detach()
        return search.result()
