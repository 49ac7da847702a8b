"""APGD's step-size schedule: the checkpoints and the batched halving rule.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, Sec. 3.2. APGD needs no step-size tuning because the step
starts at ``2 * eps`` and is halved at fixed checkpoints of the iteration budget wherever
progress stalled; this module holds that schedule, apart from the attacks that use it
(:mod:`advimage.attacks.apgd`, :mod:`advimage.attacks.apgd_targeted`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["StepSizeRule", "apgd_checkpoints"]


def apgd_checkpoints(steps: int) -> list[int]:
    """Iteration counts ``w_j`` at which APGD's step-size rule is checked.

    ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` and
    ``w_j = ceil(p_j * steps)``: the first checkpoint after 22% of the budget, then ever
    shorter intervals down to 6% of the budget.

    Args:
        steps: Total number of iterations (>= 1).

    Returns:
        Sorted distinct checkpoints in ``[1, steps]``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    p = [0.0, 0.22]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - 0.03, 0.06)
        if nxt > 1.0:
            break
        p.append(nxt)
    # the 1e-9 guards ceil() against float noise such as 0.41 * 100 = 41.000000000000007
    w = {math.ceil(pj * steps - 1e-9) for pj in p[1:]}
    return sorted(wj for wj in w if 1 <= wj <= steps)


class StepSizeRule:
    """APGD's step-size halving rule, batched over samples.

    At checkpoint ``w_j`` the step size of a sample is halved when either

    1. the loss increased in at most ``rho * (w_j - w_{j-1})`` of the iterations since the
       previous checkpoint (counting ``f(x^(i+1)) > f(x^(i))``), or
    2. the step size was not halved at ``w_{j-1}`` and the best loss did not improve since.

    Feed it the per-sample loss of every iterate with :meth:`update`; :meth:`select` keeps the
    state of a subset when the attack drops finished samples.

    This follows the reference code (``pyautoattack``'s ``check_oscillation`` and
    ``fl_reduce_no_impr``), which departs from the paper's text in three details, kept so that
    advimage's APGD computes the reference's iterates (``tests/attacks/test_apgd_reference.py``):
    condition 1 is ``<=``; in the first window the first iterate's loss is compared with 0 (the
    code's zero-filled loss buffer), not with the start's, so a cross-entropy run counts it as
    an increase and a targeted DLR run, whose loss is negative until it succeeds, does not;
    condition 2 never fires at the first checkpoint. The checkpoints are the paper's (the
    code's own at 100 steps).
    """

    def __init__(self, steps: int, loss0: Tensor, rho: float = 0.75) -> None:
        self.checkpoints = frozenset(apgd_checkpoints(steps))
        self.rho = rho  # fraction of iterations that must increase the loss
        self.last_check = 0  # w_{j-1}
        # f(x^(i)), shape (B,); the reference compares the first iterate's loss with 0
        self.prev_loss = torch.zeros_like(loss0.detach())
        self.n_increase = torch.zeros_like(self.prev_loss)  # increases since w_{j-1}
        self.best = loss0.detach().clone()  # f_max so far
        self.best_at_check = self.best.clone()  # f_max at w_{j-1}
        # condition 2 is off at the first checkpoint, as if the step had been halved at w_0
        self.halved_at_check = torch.ones_like(self.prev_loss, dtype=torch.bool)

    def update(self, loss: Tensor, it: int) -> tuple[Tensor, Tensor | None]:
        """Record the loss of iterate ``it`` (1-based).

        Returns:
            ``(improved, halve)``: ``improved`` marks samples whose best loss rose (B,);
            ``halve`` marks samples whose step size must be halved (B,), or ``None`` when
            ``it`` is not a checkpoint.
        """
        loss = loss.detach()
        self.n_increase += (loss > self.prev_loss).to(self.n_increase.dtype)
        self.prev_loss = loss
        improved = loss > self.best
        self.best = torch.where(improved, loss, self.best)
        if it not in self.checkpoints:
            return improved, None
        cond1 = self.n_increase <= self.rho * (it - self.last_check)
        cond2 = ~self.halved_at_check & (self.best <= self.best_at_check)
        halve = cond1 | cond2
        self.halved_at_check = halve
        self.best_at_check = self.best.clone()
        self.n_increase = torch.zeros_like(self.n_increase)
        self.last_check = it
        return improved, halve

    def select(self, keep: Tensor) -> None:
        """Keep only the samples at indices ``keep`` (1-d long tensor)."""
        for name in ("prev_loss", "n_increase", "best", "best_at_check", "halved_at_check"):
            setattr(self, name, getattr(self, name).index_select(0, keep))
