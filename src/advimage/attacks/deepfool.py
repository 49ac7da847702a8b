"""DeepFool, L2 and L-inf: iterative linearization of the nearest decision boundary.

Moosavi-Dezfooli, Fawzi & Frossard, "DeepFool: a simple and accurate method to fool deep
neural networks", CVPR 2016 (Algorithms 2 and 3). At each step the classifier is linearized
around the iterate; for every candidate class ``k`` the distance to the boundary with the true
class is ``|z_k - z_y| / ||grad(z_k - z_y)||_*`` (dual norm: L2 for L2, L1 for L-inf), and the
iterate moves onto the nearest one: ``p_i = (d + 1e-4) * g / ||g||_2`` (L2) or
``(d + 1e-4) * sign(g)`` (L-inf). The result is ``x + (1 + overshoot) * sum_i p_i``, clipped.

As in Foolbox 3.3 (``L2DeepFoolAttack``, ``LinfDeepFoolAttack``) and torchattacks: 50 steps,
overshoot 0.02 applied to the accumulated step, and only the ``candidates`` = 10 classes with
the highest clean logits are considered (all classes for models with <= 10). Departures: the
boundary is taken with the *label* ``y`` (Foolbox uses the clean top prediction; they agree on
every sample that needs attacking), and samples are dropped from the batch once fooled.
DeepFool is untargeted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from advimage.attacks.base import Model, check_positive_int
from advimage.attacks.minimal_norm import MinimalNormAttack, MinimalNormResult, Search, snap
from advimage.attacks.registry import register_attack
from advimage.attacks.restarts import take
from advimage.lp_balls import lp_norms, rows

__all__ = ["DeepFool"]

_TINY = 1e-8  # added to gradient norms (Foolbox 3.3)
_STEP_PAD = 1e-4  # added to each step's distance (Foolbox 3.3), pixel units


@register_attack("deepfool")
@dataclass
class DeepFool(MinimalNormAttack):
    """DeepFool (Moosavi-Dezfooli et al., CVPR 2016) for ``"l2"`` and ``"linf"``.

    Args:
        norm: ``"l2"`` (default) or ``"linf"``.
        eps: ``inf`` (default): minimal norm; finite: results are shrunk into that ball.
        steps: Most linearization steps (50).
        candidates: Classes considered per sample: the top ``candidates`` clean logits (10).
        overshoot: Relative overshoot of the accumulated step (0.02).
    """

    supports_targeted: ClassVar[bool] = False
    norm: str = "l2"
    steps: int = 50
    candidates: int = 10
    overshoot: float = 0.02

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self.steps, "steps")
        check_positive_int(self.candidates, "candidates", minimum=2)
        if not (isinstance(self.overshoot, int | float) and self.overshoot >= 0):
            raise ValueError(f"overshoot must be a number >= 0, got {self.overshoot!r}")

    def _step(self, logits: Tensor, xg: Tensor, y: Tensor, classes: Tensor) -> Tensor:
        """The step onto the nearest linearized boundary among ``classes`` ``(b, k)``."""
        z_y = logits.gather(1, y.view(-1, 1)).squeeze(1)
        best_d = torch.full_like(z_y, float("inf"))
        best_g = torch.zeros_like(xg)
        dual = "l1" if self.norm == "linf" else "l2"
        k = classes.shape[1]
        for j in range(k):
            diff = logits.gather(1, classes[:, j : j + 1]).squeeze(1) - z_y  # (b,)
            (g,) = torch.autograd.grad(diff.sum(), xg, retain_graph=j < k - 1)
            d = diff.detach().abs() / (lp_norms(g, dual) + _TINY)
            closer = d < best_d
            best_d = torch.where(closer, d, best_d)
            best_g = torch.where(rows(closer, g), g, best_g)
        best_d = best_d + _STEP_PAD
        if self.norm == "linf":
            return rows(best_d, best_g) * best_g.sign()
        return rows(best_d / (lp_norms(best_g, "l2") + _TINY), best_g) * best_g

    def _result(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        generator: torch.Generator,
    ) -> MinimalNormResult:
        lo, hi = self.threat.bounds
        search = Search(x, self.norm)
        with torch.no_grad():
            clean = model(x)
        k = min(self.candidates, clean.shape[1])
        others = clean.scatter(1, y.view(-1, 1), float("-inf"))
        classes = others.topk(k - 1, dim=1).indices  # (B, k-1), the label excluded
        idx = torch.arange(len(x), device=x.device)  # rows still attacked
        x_adv, p_total = x, torch.zeros_like(x)
        for i in range(self.steps + 1):
            xg = x_adv.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = model(xg)
            ya = take(y, idx)
            adv = logits.detach().argmax(1) != ya  # (b,) judged at the iterate
            if bool(adv.any()):
                hit = torch.zeros(len(x), dtype=torch.bool, device=x.device)
                hit[idx[adv]] = True
                search.offer(search.best.index_copy(0, idx, x_adv.detach()), hit)
                if bool(adv.all()):
                    break
            if i == self.steps:
                break
            step = self._step(logits, xg, ya, take(classes, idx))
            keep = (~adv).nonzero().flatten()
            idx, p_total = idx.index_select(0, keep), (p_total + step).index_select(0, keep)
            xs = take(x, idx)
            x_adv = snap(model, (xs + (1 + self.overshoot) * p_total).clamp(lo, hi), xs).detach()
        return search.result()
