"""Projected Gradient Descent (ascent) in the linf or l2 ball.

Madry, Makelov, Schmidt, Tsipras & Vladu (2018), "Towards Deep Learning Models Resistant to
Adversarial Attacks": from a uniform random point of the ball, repeat
``x <- project(x + alpha * direction(grad))`` where direction is the sign (linf) or the
normalised gradient (l2). One class serves both norms (``norm=``), as the CLI passes
``--norm``. Step size defaults to ``2.5 * eps / steps`` (the paper's rule of thumb), with
optional cosine or step-decay schedules, restarts, early stop and EOT from the shared loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from advimage.attacks.loop import IterativeAttack
from advimage.attacks.registry import register_attack

__all__ = ["PGD"]


@register_attack("pgd")
@dataclass
class PGD(IterativeAttack):
    """PGD with random start (Madry et al., 2018); all options of :class:`IterativeAttack`.

    Example:
        >>> PGD(eps=8/255, norm="linf", steps=10)(model, x, y)  # doctest: +SKIP
    """
