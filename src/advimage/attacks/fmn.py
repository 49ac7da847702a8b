"""Fast Minimum-Norm attack (FMN) for the L0, L1, L2 and L-inf threat models.

Pintor, Roli, Brendel & Biggio, "Fast Minimum-norm Adversarial Attacks through Adaptive Norm
Constraints", NeurIPS 2021 (Algorithm 1). FMN keeps, per sample, a norm budget ``eps`` and
takes normalized gradient steps on the logit margin inside the ``eps``-ball around ``x``:

* while the sample is not yet adversarial, ``eps`` jumps to ``||delta|| + |margin| /
  ||grad||_*`` (the linearized distance to the boundary, dual norm ``*``); after the first
  success it grows by ``(1 + gamma)`` when the iterate is not adversarial and shrinks to
  ``min((1 - gamma) eps, ||best delta||)`` when it is (L0: by at least one pixel);
* the step ``alpha`` (from 1 down to 0.01) and ``gamma`` (from 0.05 down to 0.001) follow cosine
  annealing, as in the paper and Foolbox 3.3's ``FMNAttackLp``;
* ``delta`` moves by ``alpha * grad / ||grad||_2`` and is projected onto the ``eps``-ball of the
  norm intersected with the box (:mod:`advimage.lp_balls`).

Departures, deliberate: the L2 ball projection is applied (Foolbox 3.3.4's ``L2FMNAttack``
divides the norm by itself and never projects); the L1 projection is the exact one onto the ball
*within the box* (Foolbox projects onto the ball, then clips); L0 counts pixels, not features
(:mod:`advimage.lp_balls`); no initial attack or boundary search (the paper's default start at
``x``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from advimage.attacks.base import Model, check_positive_float, check_positive_int
from advimage.attacks.loop import input_gradient
from advimage.attacks.losses import is_success, margin_loss
from advimage.attacks.minimal_norm import MinimalNormAttack, MinimalNormResult, Search, snap
from advimage.attacks.registry import register_attack
from advimage.lp_balls import lp_norms, project_l0, project_l1_box, rows

__all__ = ["FMN", "cosine_anneal"]

# Dual norm used in the distance-to-boundary estimate |margin| / ||grad||_dual.
_DUAL = {"linf": "l1", "l2": "l2", "l1": "linf"}
# Final gamma of the cosine annealing (Pintor et al., 2021).
_GAMMA_FINAL = 1e-3
_TINY = 1e-12


def cosine_anneal(start: float, end: float, i: int, steps: int) -> float:
    """``start`` at step 0 annealed to ``end`` over ``steps`` steps on a half cosine."""
    return end + (start - end) * (1 + math.cos(math.pi * i / steps)) / 2


@register_attack("fmn")
@dataclass
class FMN(MinimalNormAttack):
    """Fast Minimum-Norm attack (Pintor et al., NeurIPS 2021), L0/L1/L2/L-inf.

    Args:
        norm: ``"linf"``, ``"l2"``, ``"l1"`` or ``"l0"`` (pixels, see :mod:`advimage.lp_balls`).
        eps: ``inf`` (default): minimal norm; finite: returned perturbations are shrunk into it.
        steps: Iterations (100 in the paper and Foolbox; 1000 for the paper's best numbers).
        max_stepsize: Initial step ``alpha`` (annealed by cosine to ``min_stepsize``).
        min_stepsize: Final step; ``None``: ``max_stepsize / 100``.
        gamma: Initial ``eps`` update factor (annealed to 0.001).
        box_aware: Drop gradient coordinates that point out of the box at pixels already on
            its face, before normalizing the step and estimating the distance to the boundary
            (``False``: the paper's plain gradient). Without it L2-FMN stalls on images with
            many saturated pixels: the normalized step leaves the box, clipping eats it, and
            ``eps = ||delta|| + |margin| / ||grad||`` stops growing (70% of the digits test
            images were never fooled at any step count).
    """

    norms: ClassVar[tuple[str, ...]] = ("linf", "l2", "l1", "l0")
    norm: str = "l2"
    steps: int = 100
    max_stepsize: float = 1.0
    min_stepsize: float | None = None
    gamma: float = 0.05
    box_aware: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self.steps, "steps")
        check_positive_float(self.max_stepsize, "max_stepsize")
        if self.min_stepsize is not None:
            check_positive_float(self.min_stepsize, "min_stepsize")
        if not 0.0 < self.gamma < 1.0:
            raise ValueError(f"gamma must be in (0, 1), got {self.gamma!r}")

    def _project(self, x: Tensor, delta: Tensor, eps: Tensor) -> Tensor:
        """``delta`` into the per-sample ``eps``-ball within the box (returns a perturbation)."""
        bounds = self.threat.bounds
        if self.norm == "l1":
            return project_l1_box(delta, x, eps, bounds)
        if self.norm == "l0":
            return project_l0(delta, x, eps, bounds)
        if self.norm == "linf":
            e = rows(eps, delta)
            delta = torch.maximum(torch.minimum(delta, e), -e)
        else:
            n = lp_norms(delta, "l2")
            delta = delta * rows(torch.where(n > eps, eps / n.clamp_min(_TINY), 1.0), delta)
        return (x + delta).clamp(*bounds) - x

    def _feasible(self, x_adv: Tensor, grad: Tensor) -> Tensor:
        """``grad`` without the coordinates that point out of the box where ``x_adv`` sits on
        its face (the projection of the gradient onto the box's tangent cone)."""
        lo, hi = self.threat.bounds
        out = ((x_adv <= lo) & (grad < 0)) | ((x_adv >= hi) & (grad > 0))
        return torch.where(out, torch.zeros_like(grad), grad)

    def _update_eps(
        self, eps: Tensor, adv: Tensor, search: Search, norms: Tensor, to_boundary: Tensor,
        gamma: float,
    ) -> Tensor:
        """Algorithm 1's adaptive budget (L0: integers, moving by at least one pixel)."""
        best = search.best_norm
        if self.norm == "l0":
            down = torch.minimum(torch.minimum(eps - 1, torch.floor(eps * (1 - gamma))), best)
            up = torch.maximum(eps + 1, torch.floor(eps * (1 + gamma)))
            return torch.where(adv, down, up).clamp_min(1)
        grow = torch.where(search.found, eps * (1 + gamma), norms + to_boundary)
        return torch.where(adv, torch.minimum(eps * (1 - gamma), best), grow)

    def _result(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        generator: torch.Generator,
    ) -> MinimalNormResult:
        lo, hi = self.threat.bounds
        n = len(x)
        if self.norm == "l0":
            worst = torch.full((n,), float(lp_norms(torch.ones_like(x[:1]), "l0")[0]))
            eps = torch.ones(n, dtype=x.dtype, device=x.device)
        else:
            worst = lp_norms(torch.maximum(x - lo, hi - x), self.norm)
            eps = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
        worst = worst.to(device=x.device, dtype=x.dtype)
        min_step = self.min_stepsize if self.min_stepsize is not None else self.max_stepsize / 100
        search = Search(x, self.norm)
        delta = torch.zeros_like(x)
        for i in range(self.steps):
            alpha = cosine_anneal(self.max_stepsize, min_step, i, self.steps)
            gamma = cosine_anneal(self.gamma, _GAMMA_FINAL, i, self.steps)
            x_adv = snap(model, x + delta, x)
            grad, margin, logits = input_gradient(
                model, x_adv, margin_loss, per_row=(y, target)
            )
            adv = is_success(logits, y, target)
            grad = self._feasible(x_adv, grad) if self.box_aware else grad
            norms = search.offer(x_adv, adv)
            to_boundary = torch.zeros_like(norms)
            if self.norm != "l0":
                dual = lp_norms(grad, _DUAL[self.norm])
                to_boundary = margin.abs() / dual.clamp_min(_TINY)
            eps = self._update_eps(eps, adv, search, norms, to_boundary, gamma)
            eps = torch.minimum(eps, worst)
            step = grad / rows(lp_norms(grad, "l2").clamp_min(_TINY), grad)
            delta = self._project(x, delta + alpha * step, eps).detach()
        return search.result()
