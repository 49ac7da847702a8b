"""Differentiable stand-ins for the noise-signature criteria, for white-box adaptive attacks.

Hu, Yu et al. (NeurIPS 2019), "A New Defense Against Adversarial Images: Turning a Weakness
into a Strength", Section 5: an adversary who knows the detector adds one term per criterion
to its loss (official ``attack.py``, ``PGD``/``CW`` with ``setting='white'``):

* C1: minimize :func:`~advimage.detect.criteria.softmax_l1_change` (already differentiable);
* C2t: one targeted step from ``x`` towards a random class should reach it: minimize
  :func:`c2t_surrogate_loss`;
* C2u: one untargeted step from ``x`` should leave its current class: maximize
  :func:`c2u_surrogate_loss`.

The step counts of C2 are not differentiable, so the paper replaces them by *one* attack step
whose Jacobian is taken as the identity (the official ``L3Attack``/``L4Attack`` autograd
functions return ``grad_output`` unchanged): :func:`one_step_attack` is that straight-through
step. Its inner gradient uses the same raw-gradient update and L-inf projection as
:func:`~advimage.detect.criteria.steps_to_flip`, so the surrogate tracks the detector exactly.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from advimage.attacks.base import Model, check_positive_float
from advimage.attacks.loop import input_gradient
from advimage.attacks.losses import ce_loss
from advimage.threat import ThreatModel

__all__ = ["c2t_surrogate_loss", "c2u_surrogate_loss", "one_step_attack"]


def one_step_attack(
    model: Model,
    x: Tensor,
    label: Tensor,
    *,
    lr: float,
    radius: float,
    target: Tensor | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    """One C2 step from ``x`` with a straight-through (identity) Jacobian, ``(B, C, H, W)``.

    Forward value: ``project(x + lr * grad)`` with the raw gradient of ``CE(f(x), label)``
    (untargeted) or of ``-CE(f(x), target)`` (targeted), projected to the L-inf ball of
    ``radius`` around ``x`` inside ``bounds``. Backward: ``d out / d x = I``, as in the
    official code, so gradients of a loss at the stepped point flow back to ``x`` unchanged.
    """
    lr = check_positive_float(lr, "lr")
    threat = ThreatModel("linf", radius, bounds)
    x0 = x.detach()
    grad = input_gradient(model, x0, ce_loss, per_row=(label, target))[0]  # (B, C, H, W)
    stepped = threat.project(x0, x0 + lr * grad)  # (B, C, H, W)
    return x + (stepped - x0)  # value = stepped; gradient w.r.t. x = identity


def c2t_surrogate_loss(
    model: Model,
    x: Tensor,
    target: Tensor,
    *,
    lr: float,
    radius: float,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    """Per-sample ``CE(f(x_t), target)`` at one targeted step ``x_t`` to ``target``, ``(B,)``.

    Small when a single targeted step reaches ``target``, i.e. when C2t would count few steps;
    an adaptive attacker minimizes it (official ``loss3``). The label passed to the inner
    step is irrelevant for a targeted step, so ``target`` serves for both.
    """
    x_t = one_step_attack(model, x, target, lr=lr, radius=radius, target=target, bounds=bounds)
    return F.cross_entropy(model(x_t), target, reduction="none")


def c2u_surrogate_loss(
    model: Model,
    x: Tensor,
    label: Tensor,
    *,
    lr: float,
    radius: float,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    """Per-sample ``CE(f(x_u), label)`` at one untargeted step ``x_u`` from ``label``, ``(B,)``.

    Large when a single untargeted step leaves ``label`` (the class the adversarial image is
    classified as), i.e. when C2u would count few steps; an adaptive attacker maximizes it
    (official ``loss4``).
    """
    x_u = one_step_attack(model, x, label, lr=lr, radius=radius, bounds=bounds)
    return F.cross_entropy(model(x_u), label, reduction="none")
