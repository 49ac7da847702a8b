"""Fast Gradient (Sign) Method: one step of size eps.

Goodfellow, Shlens & Szegedy (2015), "Explaining and Harnessing Adversarial Examples":
``x + eps * sign(grad)`` for linf; the l2 variant steps ``eps * grad / ||grad||_2``
(the "fast gradient method"). It is the shared loop with one step and no random start, so
validation, freezing, early stop (already-fooled samples stay untouched) and EOT all apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from advimage.attacks.loop import IterativeAttack
from advimage.attacks.registry import register_attack

__all__ = ["FGSM"]


@register_attack("fgsm")
@dataclass
class FGSM(IterativeAttack):
    """One gradient step of length ``eps`` in the steepest direction of ``norm``.

    Args:
        eps: Budget (pixel units); the step length.
        norm: ``"linf"`` (sign of the gradient) or ``"l2"`` (normalised gradient).
        loss: Loss to ascend (``"ce"`` in the paper).
        early_stop: Leave samples the model already misclassifies untouched.
        eot: Gradient samples averaged for randomized models.
    """

    steps: int = field(default=1, init=False)
    step_size: float | None = field(default=None, init=False)
    random_start: bool = field(default=False, init=False)
    restarts: int = field(default=1, init=False)
    schedule: str = field(default="constant", init=False)

    def default_step_size(self) -> float:
        """FGSM steps the whole budget at once."""
        return self.eps
