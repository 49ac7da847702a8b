"""Carlini-Wagner L2 attack: minimal-perturbation search with a batched binary search on c.

Carlini & Wagner (2017), "Towards Evaluating the Robustness of Neural Networks". Minimise
``||x' - x||_2^2 + c * f(x')`` with ``f = max(z_y - max_{j!=y} z_j, -kappa)`` (targeted:
``max(max_{j!=t} z_j - z_t, -kappa)``), over ``x' = lo + (tanh(w) + 1) / 2 * (hi - lo)`` so the
box constraint disappears (the "change of variables"), with Adam on ``w``. A binary search
per sample finds the smallest ``c`` that still succeeds; the smallest successful L2 iterate
is kept. Every sample has its own ``c``, so the whole search is batched.

``eps`` defaults to ``inf`` (a minimal-perturbation attack: the final projection only clips
to ``bounds``); with a finite ``eps`` the final projection shrinks larger perturbations.
Samples never fooled are returned unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from advimage.attacks.adam import AdamState, adam_step
from advimage.attacks.base import Attack, Model, check_positive_float, check_positive_int
from advimage.attacks.loop import input_gradient
from advimage.attacks.losses import margin_loss
from advimage.attacks.registry import register_attack
from advimage.threat import l2_norms

__all__ = ["CarliniWagnerL2"]

# Keep tanh-space inputs off +-1 so atanh stays finite (unitless).
_ATANH_CLIP = 1 - 1e-6
# Upper bound for c before any success: the search multiplies c by 10 until it succeeds.
_C_GROWTH = 10.0


@register_attack("cw-l2")
@dataclass
class CarliniWagnerL2(Attack):
    """Carlini-Wagner L2 (2017) with per-sample binary search over the constant ``c``.

    Args:
        eps: L2 budget; ``inf`` (default) = minimal perturbation, only clipped to bounds.
        norm: Must be ``"l2"`` (accepted so generic callers can pass ``norm=``).
        steps: Adam steps per binary-search step.
        binary_steps: Binary-search steps over ``c``.
        initial_const: Starting ``c`` (trade-off of distance vs. misclassification).
        lr: Adam learning rate in tanh-space units.
        kappa: Confidence margin in logit units (0 = just cross the decision boundary).
        eot: Gradient samples averaged per step for randomized models.
    """

    eps: float = math.inf
    norm: str = "l2"
    steps: int = 100
    binary_steps: int = 9
    initial_const: float = 1e-3
    lr: float = 1e-2
    kappa: float = 0.0
    eot: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.norm != "l2":
            raise ValueError(f"cw-l2 is an L2 attack: norm must be 'l2', got {self.norm!r}")
        check_positive_int(self.steps, "steps")
        check_positive_int(self.binary_steps, "binary_steps")
        check_positive_int(self.eot, "eot")
        check_positive_float(self.initial_const, "initial_const")
        check_positive_float(self.lr, "lr")
        if not (isinstance(self.kappa, (int, float)) and self.kappa >= 0):
            raise ValueError(f"kappa must be a number >= 0, got {self.kappa!r}")

    def _margin(self, logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """Signed success margin ``(B,)``: ``> kappa`` means success with confidence kappa."""
        return margin_loss(logits, y, target)

    def _objective(
        self, logits: Tensor, y: Tensor, target: Tensor | None, const: Tensor
    ) -> Tensor:
        """``-c * f`` per sample, ``f = max(-margin, -kappa)``: ascending it minimises ``c f``."""
        f = (-self._margin(logits, y, target)).clamp_min(-float(self.kappa))
        return -(const * f)

    def _run(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        lo, hi = self.threat.bounds
        half = (hi - lo) / 2
        n = len(x)
        rows = (-1,) + (1,) * (x.dim() - 1)
        w0 = torch.atanh(((x - lo) / half - 1).clamp(-_ATANH_CLIP, _ATANH_CLIP))  # (B, C, H, W)

        const = torch.full((n,), float(self.initial_const), dtype=x.dtype, device=x.device)
        lower = torch.zeros_like(const)
        upper = torch.full_like(const, math.inf)
        best_l2 = torch.full_like(const, math.inf)
        best_x = x.clone()
        kappa = float(self.kappa)

        for _ in range(self.binary_steps):
            w = w0.clone()
            adam = AdamState.zeros_like(w)
            found = torch.zeros(n, dtype=torch.bool, device=x.device)
            for _ in range(self.steps):
                tw = torch.tanh(w)
                x_adv = lo + (tw + 1) * half  # (B, C, H, W)
                grad_obj, _, logits = input_gradient(
                    model, x_adv, self._objective, self.eot, per_row=(y, target, const)
                )
                diff = x_adv - x
                l2 = l2_norms(diff)  # (B,)
                # success of this iterate (judged before its update) -> keep the closest
                succ = self._margin(logits, y, target) > kappa
                better = succ & (l2 < best_l2)
                best_l2 = torch.where(better, l2, best_l2)
                best_x = torch.where(better.view(rows), x_adv, best_x)
                found |= succ
                # d/dx of ||x'-x||^2 + c f, chained through x' = lo + (tanh(w)+1) * half
                grad_x = 2 * diff - grad_obj
                grad_w = grad_x * (1 - tw * tw) * half
                w, adam = adam_step(w, grad_w, adam, self.lr)

            # batched binary search: shrink c where we succeeded, grow it where we failed
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            bisect = (lower + upper) / 2
            const = torch.where(torch.isfinite(upper), bisect, const * _C_GROWTH)
        return best_x
