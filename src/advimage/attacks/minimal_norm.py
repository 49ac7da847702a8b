"""What the minimal-norm attacks (FMN, DDN, DeepFool) share: the result with per-sample norms.

A minimal-norm attack (Carlini & Wagner, 2017; DeepFool, Moosavi-Dezfooli et al., CVPR 2016;
DDN, Rony et al., CVPR 2019; FMN, Pintor et al., NeurIPS 2021) looks for the *smallest*
perturbation that fools the model, so one run gives every budget's robust accuracy: a sample is
robust at ``eps`` exactly when its minimal norm exceeds ``eps``
(:func:`advimage.eval.minimal.robust_curve`). ``eps`` defaults to ``inf``; a finite ``eps``
only shrinks the returned perturbations into that ball (the base class's final projection).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from advimage.attacks.base import AttackResult, Model
from advimage.attacks.losses import is_success
from advimage.attacks.result_attack import ResultAttack
from advimage.lp_balls import lp_norms, round_towards, rows
from advimage.model_flags import Wrapper
from advimage.threat import is_low_precision

__all__ = ["MinimalNormAttack", "MinimalNormResult", "Search", "snap"]


@dataclass(frozen=True)
class MinimalNormResult(AttackResult):
    """A minimal-norm run: the images, and per sample the norm of the smallest fooling change.

    Attributes:
        x_adv: Adversarial images (the clean image where the attack failed).
        norms: ``(B,)`` distance of ``x_adv`` to ``x`` in the attack's norm where it fools the
            model (0 for samples already misclassified, or already the target), ``inf`` where
            the attack failed.
        success: ``(B,)`` bool, ``x_adv`` fools the model (judged inside the attack).
    """

    norms: Tensor
    success: Tensor


class Search:
    """Per-sample best adversarial point of a minimal-norm search (smallest norm so far)."""

    def __init__(self, x: Tensor, norm: str) -> None:
        self.x = x
        self.norm = norm
        self.best = x.clone()
        self.best_norm = torch.full((len(x),), math.inf, dtype=x.dtype, device=x.device)
        self.found = torch.zeros(len(x), dtype=torch.bool, device=x.device)

    def offer(self, x_adv: Tensor, adversarial: Tensor) -> Tensor:
        """Keep ``x_adv`` where it is adversarial and closer than the best; returns its norms."""
        norms = lp_norms(x_adv - self.x, self.norm)
        better = adversarial & (norms <= self.best_norm)
        self.best = torch.where(rows(better, x_adv), x_adv, self.best)
        self.best_norm = torch.where(better, norms, self.best_norm)
        self.found |= adversarial
        return norms

    def result(self) -> MinimalNormResult:
        return MinimalNormResult(self.best, self.best_norm, self.found)


@dataclass
class MinimalNormAttack(ResultAttack[MinimalNormResult]):
    """Base of the minimal-norm attacks: ``run`` returns a :class:`MinimalNormResult`.

    Subclasses implement :meth:`_result` on validated inputs.
    """

    eps: float = math.inf

    def run(
        self, model: Model, x: Tensor, y: Tensor, *, target: Tensor | None = None
    ) -> MinimalNormResult:
        """Attack like ``self(model, x, y, target=target)`` and return the per-sample norms."""
        res = super().run(model, x, y, target=target)
        norms = self.threat.distance(x.float(), res.x_adv.float()).to(res.norms.dtype)
        norms = torch.where(res.success.to(norms.device), norms.to(res.norms.device), math.inf)
        return MinimalNormResult(res.x_adv, norms, res.success)

    def _working_copy(self, model: Model, x: Tensor) -> tuple[Model, Tensor]:
        """As the base; for float16/bfloat16 images the model is marked so that :func:`snap`
        rounds every iterate to their dtype, towards ``x``, before it is judged: a minimal
        perturbation ends on the decision boundary, where the final rounding (the same one)
        would otherwise undo it (DeepFool's 2% overshoot does not survive float16)."""
        model, xw = super()._working_copy(model, x)
        if is_low_precision(x.dtype):
            model = _Rounded(model, x.dtype)
        return model, xw

    @staticmethod
    def clean_success(model: Model, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """``(B,)`` samples the model already gets wrong (or classifies as the target)."""
        with torch.no_grad():
            return is_success(model(x), y, target)


def snap(model: Model, x_adv: Tensor, x: Tensor) -> Tensor:
    """``x_adv`` as the caller will get it: for a model marked by
    :meth:`MinimalNormAttack._working_copy`, rounded to the images' low-precision dtype towards
    ``x`` (the rounding of :meth:`advimage.threat.ThreatModel.project`); else unchanged."""
    if not isinstance(model, _Rounded):
        return x_adv
    return round_towards(x_adv.float(), x.to(model.dtype)).to(x_adv.dtype)


class _Rounded(nn.Module, Wrapper):
    """``model`` unchanged, marked with the dtype its iterates are rounded to (:func:`snap`);
    a :class:`~advimage.model_flags.Wrapper`, so ``model``'s flags are read through it."""

    def __init__(self, model: Model, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner = model
        self.dtype = dtype

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x)
