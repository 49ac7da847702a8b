"""One Adam step on a batch of tensors, for attacks that optimise images (or their tanh-space
variables) with Adam instead of signed gradient steps.

Kingma & Ba (2015), "Adam: A Method for Stochastic Optimization", Algorithm 1, with
``torch.optim.Adam``'s defaults (``beta1 = 0.9``, ``beta2 = 0.999``, ``eps = 1e-8``). Used by
the Carlini-Wagner L2 attack (:mod:`advimage.attacks.cw`) and the official attacks of Hu, Yu et
al. (NeurIPS 2019, :mod:`advimage.detect.adaptive`). Written on plain tensors rather than
``torch.optim``: every element (so every sample of the batch) has its own moments, the state
lives in the caller's loop and nothing outlives the attack call.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["ADAM_BETA1", "ADAM_BETA2", "ADAM_EPS", "AdamState", "adam_step"]

# Moment decays (unitless) and numerical epsilon (gradient units), torch.optim.Adam's defaults.
ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 0.9, 0.999, 1e-8


class AdamState(NamedTuple):
    """Adam's moments for a tensor of parameters, and how many steps produced them.

    Attributes:
        m: First moment (same shape as the parameters).
        v: Second moment (same shape as the parameters).
        t: Steps taken so far (0 before the first).
    """

    m: Tensor
    v: Tensor
    t: int

    @classmethod
    def zeros_like(cls, param: Tensor) -> AdamState:
        """The state before the first step: zero moments."""
        return cls(torch.zeros_like(param), torch.zeros_like(param), 0)


def adam_step(
    param: Tensor, grad: Tensor, state: AdamState, lr: float
) -> tuple[Tensor, AdamState]:
    """One Adam *descent* step: ``param - lr * m_hat / (sqrt(v_hat) + eps)``.

    Args:
        param: Parameters ``(B, ...)``.
        grad: Gradient of the loss to minimise w.r.t. ``param`` (same shape).
        state: Moments from the previous step (:meth:`AdamState.zeros_like` at first).
        lr: Learning rate in units of ``param``.

    Returns:
        ``(new_param, new_state)``; the inputs are not modified.
    """
    t = state.t + 1
    m = ADAM_BETA1 * state.m + (1 - ADAM_BETA1) * grad
    v = ADAM_BETA2 * state.v + (1 - ADAM_BETA2) * grad * grad
    m_hat = m / (1 - ADAM_BETA1**t)
    v_hat = v / (1 - ADAM_BETA2**t)
    return param - lr * m_hat / (v_hat.sqrt() + ADAM_EPS), AdamState(m, v, t)
