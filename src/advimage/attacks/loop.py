"""The one shared iterative gradient loop (FGSM, BIM/PGD and friends build on it).

Projected gradient ascent of Madry et al. (2018), "Towards Deep Learning Models Resistant to
Adversarial Attacks", written once with the practical details every iterative attack needs:

* early stopping on the *active subset*: with ``early_stop=True`` a sample that already fools
  the model (or hits its target) is frozen and dropped from later forward/backward passes; the
  success test reuses the logits of the gradient pass, so it costs no extra forward;
* ``early_stop=False`` and one restart does exactly the work of a bare PGD loop (no extra
  forwards, no host syncs) and returns the last iterate;
* restarts run only on samples not yet fooled and keep, per sample, the best result
  (successful, else highest loss);
* Expectation over Transformation (Athalye et al., 2018): ``eot > 1`` averages the input
  gradient over that many passes, for randomized models; a model that *declares* itself
  deterministic (:func:`advimage.model_flags.model_flags`: ``is_randomized`` False on the model
  and on every flag-declaring submodule, e.g. a noise defense at sigma 0 or with its draw
  fixed) gets one pass, the same gradient;
* memory grows with the batch only; no iterate history is kept.

Transfer attacks compose three options of this loop (see :mod:`advimage.attacks.transfer`):
``momentum`` (MI-FGSM), ``diversity_prob`` (DI) and ``ti_kernel`` (TI); all off by default,
and off they leave every number of the loop unchanged.

Subclasses customise the hooks :meth:`init`, :meth:`init_state`, :meth:`loss_fn`,
:meth:`step` and :meth:`step_size_at`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from advimage.attacks.base import Attack, Model, check_positive_float, check_positive_int
from advimage.attacks.gradient import declares_deterministic, input_gradient
from advimage.attacks.losses import get_loss, is_success
from advimage.attacks.restarts import ActiveRows, BestSoFar, RunOutcome, attack_remaining, take
from advimage.attacks.transfer import (
    DiverseInputs,
    check_transfer_options,
    momentum_update,
    smooth,
)

__all__ = ["SCHEDULES", "IterativeAttack", "declares_deterministic", "input_gradient"]

SCHEDULES: tuple[str, ...] = ("constant", "cosine", "step")
# "step" schedule: multiply the step size by this factor at each milestone (fractions of steps).
_STEP_DECAY = 0.1
_STEP_MILESTONES = (0.5, 0.75)


def _subset_state(state: dict[str, Any], idx: Tensor) -> dict[str, Any]:
    """Keep rows ``idx`` of every per-sample tensor in ``state`` (leading dim = batch)."""
    return {k: take(v, idx) if isinstance(v, Tensor) else v for k, v in state.items()}


@dataclass
class IterativeAttack(Attack):
    """Projected gradient ascent on a per-sample loss, with early stop, restarts and EOT.

    Args:
        steps: Gradient steps per restart (>= 1).
        step_size: Step length in the norm's units; ``None`` = :meth:`default_step_size`.
        random_start: Start from a uniform random point of the ball instead of ``x``.
        restarts: Independent runs; each later run attacks only samples not yet fooled.
        early_stop: Freeze samples as soon as they are fooled (cheaper, never weaker).
        loss: ``"ce"``, ``"margin"``/``"cw"`` or ``"dlr"`` (see :mod:`advimage.attacks.losses`).
        eot: Gradient samples averaged per step (Expectation over Transformation, >= 1).
        schedule: Step-size schedule: ``"constant"``, ``"cosine"`` or ``"step"`` (x0.1 at 50%
            and 75% of the steps).
        momentum: MI-FGSM's decay ``mu`` (1.0 in the paper); 0 = no momentum.
        diversity_prob: DI's probability of resizing and padding the gradient pass's input
            (0.5 in the paper); 0 = off. With early stop, success is judged on the untransformed
            images (one extra forward per step).
        diversity_resize: DI's resize ratio (0.9: shrink and pad back; see ``transfer``).
        ti_kernel: TI's Gaussian kernel side (odd; 15 in the paper at 299 px); 0 = off.
        ti_nsig: TI's kernel half-width in standard deviations (3 in the paper).
    """

    steps: int = 10
    step_size: float | None = None
    random_start: bool = True
    restarts: int = 1
    early_stop: bool = True
    loss: str = "ce"
    eot: int = 1
    schedule: str = "constant"
    momentum: float = 0.0
    diversity_prob: float = 0.0
    diversity_resize: float = 0.9
    ti_kernel: int = 0
    ti_nsig: float = 3.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_transfer_options(
            self.momentum, self.diversity_prob, self.diversity_resize, self.ti_kernel,
            self.ti_nsig,
        )
        check_positive_int(self.steps, "steps")
        check_positive_int(self.restarts, "restarts")
        check_positive_int(self.eot, "eot")
        get_loss(self.loss)
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"unknown schedule {self.schedule!r}; choose one of: {', '.join(SCHEDULES)}"
            )
        if self.step_size is not None:
            check_positive_float(self.step_size, "step_size")
        elif not math.isfinite(self.eps):
            raise ValueError("step_size is required when eps is inf")

    # ------------------------------------------------------------------ hooks
    def default_step_size(self) -> float:
        """Step size when none is given: ``2.5 * eps / steps`` (Madry et al., 2018)."""
        return 2.5 * self.eps / self.steps

    def step_size_at(self, i: int) -> float:
        """Step size of step ``i`` (0-based) under :attr:`schedule`."""
        base = self.step_size if self.step_size is not None else self.default_step_size()
        if self.schedule == "cosine":
            return base * 0.5 * (1.0 + math.cos(math.pi * i / self.steps))
        if self.schedule == "step":
            passed = sum(i >= int(m * self.steps) for m in _STEP_MILESTONES)
            return base * _STEP_DECAY**passed
        return base

    def init(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Starting point: a random point of the ball, or ``x`` itself."""
        if self.random_start:
            return self.threat.random_start(x, generator)
        return x.clone()

    def init_state(self, x: Tensor, x_adv: Tensor) -> dict[str, Any]:
        """Per-run state for :meth:`step`; tensors must be per-sample (leading dim B)."""
        return {"momentum": torch.zeros_like(x)} if self.momentum > 0 else {}

    def loss_fn(self, logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """Per-sample loss ``(B,)`` to maximise."""
        return get_loss(self.loss)(logits, y, target)

    def step(
        self, x_adv: Tensor, grad: Tensor, x: Tensor, state: dict[str, Any], i: int
    ) -> Tensor:
        """One ascent step (the loop projects afterwards): steepest direction of the norm,
        of the TI-smoothed and momentum-accumulated gradient when those options are on."""
        if self.ti_kernel > 0:
            grad = smooth(grad, self.ti_kernel, self.ti_nsig)
        if self.momentum > 0:
            grad = momentum_update(grad, state["momentum"], self.momentum)
            state["momentum"] = grad
        return x_adv + self.step_size_at(i) * self.threat.direction(grad)

    def _probe_input(self, x: Tensor) -> Tensor:
        """Validate on one row: the loop needs only the class count, so ``early_stop=False``
        costs exactly the bare loop's ``steps * B`` rows (plus this one)."""
        return x[:1]

    # ------------------------------------------------------------------ shared pieces
    def gradient(
        self, model: Model, x_adv: Tensor, y: Tensor, target: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(grad, loss, logits)`` of :meth:`loss_fn` at ``x_adv``, averaged over ``eot``."""
        return input_gradient(model, x_adv, self.loss_fn, self.eot, per_row=(y, target))

    @torch.no_grad()
    def evaluate(
        self, model: Model, x_adv: Tensor, y: Tensor, target: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """``(success (B,), loss (B,))`` at ``x_adv`` from one forward pass."""
        logits = model(x_adv)
        return is_success(logits, y, target), self.loss_fn(logits, y, target)

    # ------------------------------------------------------------------ the loop
    def _run(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        if self.restarts == 1:
            return self._run_once(model, x, y, target, generator)[0]

        def run(idx: Tensor) -> RunOutcome:
            xs, ys, ts = take(x, idx), take(y, idx), take(target, idx)
            x_adv, succ, loss = self._run_once(model, xs, ys, ts, generator)
            if succ is None or loss is None:
                succ, loss = self.evaluate(model, x_adv, ys, ts)
            return x_adv, succ, loss

        return attack_remaining(BestSoFar(x), run, restarts=self.restarts).x

    def _run_once(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        generator: torch.Generator,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """One run from :meth:`init`. Returns ``(x_adv, success, loss)``.

        ``success``/``loss`` describe the returned points when they were computed for free or
        are needed (early stop with restarts); otherwise they are ``None``.
        """
        project = self.threat.project
        x_adv = self.init(x, generator)
        state = self.init_state(x, x_adv)
        seen = model if self.diversity_prob == 0 else DiverseInputs(  # as gradients see it
            model, self.diversity_prob, self.diversity_resize, generator)
        if not self.early_stop:  # the bare loop: nothing but forward, backward and step
            for i in range(self.steps):
                grad = self.gradient(seen, x_adv, y, target)[0]
                x_adv = project(x, self.step(x_adv, grad, x, state, i)).detach()
            return x_adv, None, None

        rows = ActiveRows(x_adv)  # results, filled as samples finish
        xa, ya, ta = x, y, target
        for i in range(self.steps):
            grad, loss, logits = self.gradient(seen, x_adv, ya, ta)
            if seen is not model:  # DI: judge the image itself, not its resized copy
                with torch.no_grad():
                    logits = model(x_adv)
            succ = is_success(logits, ya, ta)  # (b,) judged at x_adv, before stepping
            if bool(succ.any()):
                keep = rows.retire(succ, x_adv, loss)
                if keep.numel() == 0:
                    return rows.outcome()
                xa, ya, ta, x_adv, grad = (
                    take(xa, keep), take(ya, keep), take(ta, keep), take(x_adv, keep),
                    take(grad, keep),
                )
                state = _subset_state(state, keep)
            x_adv = project(xa, self.step(x_adv, grad, xa, state, i)).detach()
        if self.restarts == 1:  # nobody compares runs: skip the final forward
            rows.finish(x_adv)
            return rows.x, None, None
        succ, loss = self.evaluate(model, x_adv, ya, ta)
        rows.finish(x_adv, loss, succ)
        return rows.outcome()
