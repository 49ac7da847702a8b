"""The input gradient every gradient attack takes, with Expectation over Transformation.

:func:`input_gradient` is the one place attacks differentiate the model: ``eot > 1`` averages the
gradient over that many passes (Athalye et al., 2018, "Synthesizing Robust Adversarial
Examples"), and :func:`declares_deterministic` lets a model that declares itself deterministic
take one pass. The iterative loop (:mod:`advimage.attacks.loop`) re-exports both.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from advimage.attacks.base import Model, check_positive_int
from advimage.model_flags import DeclaresFlags, model_flags, unwrap

__all__ = ["declares_deterministic", "input_gradient"]


def declares_deterministic(model: Model) -> bool:
    """True only if ``model`` declares ``is_randomized`` False and so does every flag-declaring
    submodule (a deterministic wrapper around a random defense stays random).

    Flags are read by :func:`advimage.model_flags.model_flags`, as the evaluation harness reads
    them: a model that declares nothing (a plain classifier, a callable) counts as possibly
    random, so EOT skips its repeated passes only on an explicit declaration. The wrappers an
    attack puts around the model itself (``AutocastModel``, ``AtDtype``, the minimal-norm
    rounding marker: every :class:`~advimage.model_flags.Wrapper`) are seen through.
    """
    model = unwrap(model)
    if model_flags(model).is_randomized is not False:
        return False
    if isinstance(model, torch.nn.Module):
        return all(model_flags(m).is_randomized is False for m in model.modules()
                   if isinstance(m, DeclaresFlags))
    return True


def input_gradient(
    model: Model, x_adv: Tensor, objective: Callable[[Tensor], Tensor], eot: int = 1
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradient of ``objective(model(x_adv))`` w.r.t. ``x_adv``, averaged over ``eot`` passes.

    Every gradient attack goes through this function, which is what makes :func:`EOT` work for
    all of them. ``objective`` maps logits ``(B, K)`` to a per-sample loss ``(B,)``; samples are
    independent, so the gradient of the sum is each sample's own gradient.

    Returns:
        ``(grad (B, ...), loss (B,), logits (B, K))``, all detached; loss and logits are the
        means over the ``eot`` passes (one pass for a model that declares itself deterministic,
        see :func:`declares_deterministic`).
    """
    check_positive_int(eot, "eot")
    if eot > 1 and declares_deterministic(model):
        eot = 1  # every pass would give the same gradient
    grad_sum, loss_sum, logits_sum = _one_pass(model, x_adv, objective)
    for _ in range(eot - 1):
        grad, loss, logits = _one_pass(model, x_adv, objective)
        grad_sum = grad_sum + grad
        loss_sum = loss_sum + loss
        logits_sum = logits_sum + logits
    if eot > 1:
        return grad_sum / eot, loss_sum / eot, logits_sum / eot
    return grad_sum, loss_sum, logits_sum


def _one_pass(
    model: Model, x_adv: Tensor, objective: Callable[[Tensor], Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """``(grad, loss, logits)`` of one forward/backward pass at ``x_adv``, detached."""
    xg = x_adv.detach().requires_grad_(True)  # a view: no copy of the batch
    with torch.enable_grad():
        logits = model(xg)  # (B, K)
        loss = objective(logits)  # (B,)
    (grad,) = torch.autograd.grad(loss.sum(), xg)
    return grad, loss.detach(), logits.detach()
