"""Auto-PGD (APGD-CE, APGD-DLR); the targeted APGD-T lives in :mod:`.apgd_targeted`.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020. APGD is PGD with momentum whose step size needs no tuning:
it starts at ``2 * eps`` and is halved at checkpoints where progress stalled (the two conditions
of Sec. 3.2, :mod:`advimage.attacks.apgd_schedule`), restarting from the best point found so
far. APGD-T (:class:`~advimage.attacks.apgd_targeted.APGDT`) runs the
targeted DLR loss against each of the top-k other classes in turn.

In L-inf and L2 the random start (``ThreatModel.random_start(surface=True)``), the step-size
rule (:class:`~advimage.attacks.apgd_schedule.StepSizeRule`) and the order of the operations of
the step and the projection (``ThreatModel.project_apgd``) are the reference code's, so that on
the same points with the same seed advimage's APGD-CE and APGD-T compute the reference's
iterates (``tests/attacks/test_apgd_reference.py``). Differences, deliberate: samples that
already succeeded are dropped from the batch (``early_stop``) instead of being carried along;
an unsuccessful sample returns its highest-loss point rather than the clean input (the final
projection is identical).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from advimage.attacks.apgd_l1 import apgd_l1_run
from advimage.attacks.apgd_largereps import apgd_l1_largereps_run, largereps_schedule
from advimage.attacks.apgd_schedule import StepSizeRule, apgd_checkpoints
from advimage.attacks.base import Attack, Model, check_positive_float, check_positive_int
from advimage.attacks.loop import input_gradient
from advimage.attacks.losses import get_loss, is_success
from advimage.attacks.registry import register_attack
from advimage.attacks.restarts import (
    ActiveRows,
    BestSoFar,
    RunOutcome,
    attack_remaining,
    rows_view,
    take,
)

__all__ = ["APGD", "StepSizeRule", "apgd_checkpoints"]

_LOSSES = ("ce", "dlr")


@register_attack("apgd-ce")
@dataclass
class APGD(Attack):
    """Auto-PGD (Croce & Hein, ICML 2020) for linf and l2 threat models.

    Args (dataclass fields):
        eps: Radius of the threat model (same units as the [0, 1] pixels).
        norm: ``"linf"``, ``"l2"`` or ``"l1"`` (l1-APGD with its sparsity schedule, Croce &
            Hein, ICML 2021: :mod:`advimage.attacks.apgd_l1`).
        seed: Seed of the random starts (``None``: nondeterministic).
        steps: Iterations per run (gradient evaluations, 100 in the paper).
        restarts: Random restarts; restart r only attacks samples not yet successful.
        loss: ``"ce"`` (cross-entropy) or ``"dlr"`` (difference of logits ratio); with a
            ``target`` the targeted form of the loss is used.
        rho: Fraction of increasing iterations below which the step size is halved (0.75).
        momentum: Weight of the previous update in the momentum step (0.75 in the paper).
        early_stop: Drop samples from the batch once they are adversarial (misclassified, or
            classified as the target); they keep their first adversarial point.
        eot: Gradient samples averaged per step (Expectation over Transformation, for
            randomized models); 1 for deterministic models.
        use_largereps: l1 only: each run goes through the radii ``3 eps``, ``2 eps``, ``eps``
            (30/30/40% of the steps; L1 AutoAttack's schedule, Croce & Hein, ICML 2021:
            :mod:`advimage.attacks.apgd_largereps`); off by default, as in the original.
    """

    name: ClassVar[str] = "apgd-ce"
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2", "l1")
    steps: int = 100
    restarts: int = 1
    loss: str = "ce"
    rho: float = 0.75
    momentum: float = 0.75
    early_stop: bool = True
    eot: int = 1
    use_largereps: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self.eot, "eot")
        check_positive_float(self.eps, "eps")  # finite: the first step is 2 * eps
        check_positive_int(self.steps, "steps")
        check_positive_int(self.restarts, "restarts")
        if self.loss not in _LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of: {', '.join(_LOSSES)}")
        if not 0.0 < self.rho <= 1.0:
            raise ValueError(f"rho must be in (0, 1], got {self.rho}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.use_largereps:
            if self.norm != "l1":
                raise ValueError(f"use_largereps is an l1 schedule; norm is {self.norm!r}")
            largereps_schedule(self.eps, self.steps)  # refuses too few steps

    # ------------------------------------------------------------------ losses
    def _loss(self, logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        """Per-sample loss to maximise, shape (B,)."""
        return get_loss(self.loss)(logits, y, target)

    # ------------------------------------------------------------------ driver
    def _run(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        best = self._start(model, x, y, target)
        run = self._runner(model, x, y, target, None, generator)
        return attack_remaining(best, run, restarts=self.restarts).x

    @staticmethod
    def _start(model: Model, x: Tensor, y: Tensor, target: Tensor | None) -> BestSoFar:
        """The result before any run: points the model already gets wrong (or classifies as
        the target) are done with the clean image, as in the reference implementation."""
        with torch.no_grad():
            done = is_success(model(x), y, target)  # (B,)
        return BestSoFar(x, done)

    def _runner(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        loss_target: Tensor | None,
        generator: torch.Generator,
    ) -> Callable[[Tensor], RunOutcome]:
        """One APGD run on given rows of the batch, for :func:`attack_remaining`.

        ``target`` (if given) defines success (classified as target) and the loss;
        ``loss_target`` only steers the loss (APGD-T with untargeted success).
        """
        run_target = target if target is not None else loss_target

        def run(idx: Tensor) -> RunOutcome:
            return self._single_run(
                model, take(x, idx), take(y, idx), take(target, idx), take(run_target, idx),
                generator,
            )

        return run

    # ------------------------------------------------------------------ one run
    def _forward(
        self, model: Model, x_adv: Tensor, y: Tensor, loss_target: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Logits (B, K), per-sample loss (B,) and input gradient (B, C, H, W) at ``x_adv``."""
        with torch.enable_grad():
            grad, loss, logits = input_gradient(
                model, x_adv, self._loss, self.eot, per_row=(y, loss_target)
            )
        return logits, loss, grad

    def _single_run(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        loss_target: Tensor | None,
        generator: torch.Generator,
    ) -> RunOutcome:
        """Run APGD once on a batch.

        Returns:
            ``(x_adv, success, loss)``: per row the first adversarial iterate if one was
            found, else the highest-loss iterate and its loss (``-inf`` for rows dropped by
            ``early_stop``, which are adversarial).
        """
        threat = self.threat
        if self.norm == "l1":
            return self._single_run_l1(model, x, y, target, loss_target, generator)
        x_adv = threat.random_start(x, generator, surface=True)  # (B, C, H, W)
        rows = ActiveRows(x_adv)
        logits, loss, grad = self._forward(model, x_adv, y, loss_target)
        rule = StepSizeRule(self.steps, loss, self.rho)
        # per-sample state of the active rows (``rows.idx`` maps them to rows of the result)
        s: dict[str, Tensor] = {
            "x": x, "y": y, "x_adv": x_adv, "x_prev": x_adv, "grad": grad,
            "x_best": x_adv.clone(), "grad_best": grad.clone(),
            # eta^(0) = 2 eps for both norms, (B, 1, 1, 1)
            "step": torch.full(
                (len(x),) + (1,) * (x.dim() - 1), 2.0 * self.eps, dtype=x.dtype, device=x.device
            ),
        }
        if target is not None:
            s["target"] = target
        if loss_target is not None:
            s["loss_target"] = loss_target
        for i in range(self.steps + 1):
            # 1. success of the iterate just evaluated, from the logits we already have
            ok = is_success(logits, s["y"], s.get("target"))  # (b,)
            if not self.early_stop:  # every row stays; keep the first adversarial iterate
                rows.record(ok, s["x_adv"])
            elif bool(ok.any()):
                keep = rows.retire(ok, s["x_adv"])
                if keep.numel() == 0:
                    return rows.outcome()
                s = {k: v.index_select(0, keep) for k, v in s.items()}
                loss = loss.index_select(0, keep)
                rule.select(keep)
            # 2. step-size rule on the loss of iterate i (the start only seeds the rule)
            if i > 0:
                _apply_step_size_rule(s, rule, loss, i)
            if i == self.steps:
                break
            logits, loss = self._momentum_step(model, s, i)
        rows.finish(s["x_best"], rule.best)
        return rows.outcome()

    def _single_run_l1(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        loss_target: Tensor | None,
        generator: torch.Generator,
    ) -> RunOutcome:
        """One l1-APGD run (Croce & Hein, ICML 2021): :func:`~.apgd_l1.apgd_l1_run`."""
        s: dict[str, Tensor] = {"x": x, "y": y}
        if target is not None:
            s["target"] = target
        if loss_target is not None:
            s["loss_target"] = loss_target

        def fwd(xa: Tensor, ya: Tensor, lt: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
            return self._forward(model, xa, ya, lt)

        run = apgd_l1_largereps_run if self.use_largereps else apgd_l1_run
        return run(self.threat, self.steps, self.early_stop, fwd, s, generator)

    def _momentum_step(self, model: Model, s: dict[str, Tensor], i: int) -> tuple[Tensor, Tensor]:
        """Step ``i`` of APGD in place on the state ``s``; returns logits and loss at the new
        iterate (its gradient goes to ``s["grad"]``).

        Eq. 2 of the paper, with P the projection and x^k the iterate:
        ``z = P(x^k + eta * dir(grad))``; ``x^{k+1} = P(x^k + a (z - x^k) + (1 - a)(x^k -
        x^{k-1}))``; ``a = 1`` on the first step, else the momentum (0.75).
        """
        threat = self.threat
        a = 1.0 if i == 0 else self.momentum
        xc, xa = s["x"], s["x_adv"]
        z = threat.project_apgd(xc, xa + s["step"] * threat.direction(s["grad"], apgd=True))
        s["x_prev"], s["x_adv"] = xa, threat.project_apgd(
            xc, xa + a * (z - xa) + (1.0 - a) * (xa - s["x_prev"])
        )
        logits, loss, s["grad"] = self._forward(model, s["x_adv"], s["y"], s.get("loss_target"))
        return logits, loss


def _apply_step_size_rule(s: dict[str, Tensor], rule: StepSizeRule, loss: Tensor, i: int) -> None:
    """Feed iterate ``i``'s loss to the rule; track the best point and, where the rule says so,
    halve the step and continue from the best point (Sec. 3.2 of Croce & Hein, 2020)."""
    improved, halve = rule.update(loss, i)
    view = rows_view(improved, s["x_adv"])
    s["x_best"] = torch.where(view, s["x_adv"], s["x_best"])
    s["grad_best"] = torch.where(view, s["grad"], s["grad_best"])
    if halve is not None:  # halve eta and continue from the best point
        h = rows_view(halve, s["x_adv"])
        s["step"] = torch.where(h, s["step"] / 2, s["step"])
        s["x_adv"] = torch.where(h, s["x_best"], s["x_adv"])
        s["grad"] = torch.where(h, s["grad_best"], s["grad"])


@register_attack("apgd-dlr")
@dataclass
class APGDDLR(APGD):
    """APGD with the DLR loss (the second member of AutoAttack's ``apgd-dlr`` variant)."""

    name: ClassVar[str] = "apgd-dlr"
    loss: str = "dlr"
