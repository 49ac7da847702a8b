"""Auto-PGD (APGD-CE, APGD-DLR); the targeted APGD-T lives in :mod:`.apgd_targeted`.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020. APGD is PGD with momentum whose step size needs no tuning:
it starts at ``2 * eps`` and is halved at checkpoints where progress stalled (the two conditions
of Sec. 3.2, :mod:`advimage.attacks.apgd_schedule`), restarting from the best point found so
far. APGD-T (:class:`~advimage.attacks.apgd_targeted.APGDT`) runs the
targeted DLR loss against each of the top-k other classes in turn.

Differences from the reference implementation, all deliberate: samples that already succeeded
are dropped from the batch (``early_stop``) instead of being carried along; the random start is
uniform in the eps-ball (``ThreatModel.random_start``); an unsuccessful sample returns its
highest-loss point rather than the clean input (the final projection is identical).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from advimage.attacks.apgd_schedule import StepSizeRule, apgd_checkpoints
from advimage.attacks.base import Attack, Model, check_positive_float, check_positive_int
from advimage.attacks.loop import input_gradient
from advimage.attacks.losses import get_loss, is_success
from advimage.attacks.registry import register_attack

__all__ = ["APGD", "StepSizeRule", "apgd_checkpoints"]

_LOSSES = ("ce", "dlr")


@register_attack("apgd-ce")
@dataclass
class APGD(Attack):
    """Auto-PGD (Croce & Hein, ICML 2020) for linf and l2 threat models.

    Args (dataclass fields):
        eps: Radius of the threat model (same units as the [0, 1] pixels).
        norm: ``"linf"`` or ``"l2"``.
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
    """

    name: ClassVar[str] = "apgd-ce"
    steps: int = 100
    restarts: int = 1
    loss: str = "ce"
    rho: float = 0.75
    momentum: float = 0.75
    early_stop: bool = True
    eot: int = 1

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
        generator: torch.Generator | None,
    ) -> Tensor:
        out, done, best_loss = self._init_result(model, x, y, target)
        for _ in range(self.restarts):
            self._restart(model, x, y, target, None, generator, out, done, best_loss)
        return out

    @staticmethod
    def _init_result(
        model: Model, x: Tensor, y: Tensor, target: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Result buffers: images (B, C, H, W), done flags (B,), best loss (B,).

        Points the model already gets wrong (or classifies as the target) are done with the
        clean image, as in the reference implementation.
        """
        with torch.no_grad():
            done = is_success(model(x), y, target)  # (B,)
        best_loss = torch.full(y.shape, -math.inf, dtype=x.dtype, device=x.device)
        return x.clone(), done, best_loss

    def _restart(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        loss_target: Tensor | None,
        generator: torch.Generator | None,
        out: Tensor,
        done: Tensor,
        best_loss: Tensor,
    ) -> None:
        """One APGD run on the samples not yet ``done``; updates ``out``/``done``/``best_loss``.

        ``target`` (if given) defines success (classified as target) and the loss;
        ``loss_target`` only steers the loss (APGD-T with untargeted success).
        """
        todo = (~done).nonzero().flatten()  # (n,)
        if todo.numel() == 0:
            return
        sub = lambda t: None if t is None else t.index_select(0, todo)  # noqa: E731
        run_target = target if target is not None else loss_target
        adv, ok, xb, lb = self._single_run(
            model, sub(x), sub(y), sub(target), sub(run_target), generator
        )
        # adversarial points win; otherwise keep the highest loss over restarts
        better = ~ok & (lb > best_loss.index_select(0, todo))
        new = torch.where(ok.view(-1, 1, 1, 1), adv, xb)  # (n, C, H, W)
        take = ok | better
        cur = out.index_select(0, todo)
        out.index_copy_(0, todo, torch.where(take.view(-1, 1, 1, 1), new, cur))
        best_loss.index_copy_(0, todo, torch.where(better, lb, best_loss.index_select(0, todo)))
        done.index_copy_(0, todo, ok)

    # ------------------------------------------------------------------ one run
    def _forward(
        self, model: Model, x_adv: Tensor, y: Tensor, loss_target: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Logits (B, K), per-sample loss (B,) and input gradient (B, C, H, W) at ``x_adv``."""
        with torch.enable_grad():
            grad, loss, logits = input_gradient(
                model, x_adv, lambda z: self._loss(z, y, loss_target), self.eot
            )
        return logits, loss, grad

    def _single_run(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        loss_target: Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Run APGD once on a batch.

        Returns:
            ``(x_adv, success, x_best, loss_best)``: the first adversarial iterate (B, C, H, W),
            whether one was found (B,), the highest-loss iterate (B, C, H, W) and its loss (B,).
            Rows dropped by ``early_stop`` are adversarial, so their ``x_best`` is irrelevant.
        """
        threat = self.threat
        n = x.shape[0]
        view = (-1,) + (1,) * (x.dim() - 1)  # broadcast (B,) over (B, C, H, W)

        x_adv = threat.project(x, threat.random_start(x, generator))  # (B, C, H, W)
        res_adv = x_adv.clone()
        res_ok = torch.zeros(n, dtype=torch.bool, device=x.device)
        res_best = x_adv.clone()
        res_loss = torch.full((n,), -math.inf, dtype=x.dtype, device=x.device)

        logits, loss, grad = self._forward(model, x_adv, y, loss_target)
        rule = StepSizeRule(self.steps, loss, self.rho)
        # per-sample state of the active rows; ``idx`` maps them to rows of the result
        s: dict[str, Tensor] = {
            "idx": torch.arange(n, device=x.device), "x": x, "y": y,
            "x_adv": x_adv, "x_prev": x_adv, "grad": grad,
            "x_best": x_adv.clone(), "grad_best": grad.clone(),
            # eta^(0) = 2 eps for both norms, (B, 1, 1, 1)
            "step": torch.full((n,) + view[1:], 2.0 * self.eps, dtype=x.dtype, device=x.device),
        }
        if target is not None:
            s["target"] = target
        if loss_target is not None:
            s["loss_target"] = loss_target

        for i in range(self.steps + 1):
            # 1. success of the iterate just evaluated, from the logits we already have
            ok = is_success(logits, s["y"], s.get("target"))  # (b,)
            if self.early_stop:
                if bool(ok.any()):
                    hit = s["idx"][ok]
                    res_adv.index_copy_(0, hit, s["x_adv"][ok])
                    res_ok.index_fill_(0, hit, True)
                    keep = (~ok).nonzero().flatten()
                    if keep.numel() == 0:
                        return res_adv, res_ok, res_best, res_loss
                    s = {k: v.index_select(0, keep) for k, v in s.items()}
                    loss = loss.index_select(0, keep)
                    rule.select(keep)
            else:  # every row stays; keep the first adversarial iterate, no host sync
                new = ok & ~res_ok
                res_adv = torch.where(new.view(view), s["x_adv"], res_adv)
                res_ok = res_ok | ok
            # 2. step-size rule on the loss of iterate i (the start only seeds the rule)
            if i > 0:
                improved, halve = rule.update(loss, i)
                s["x_best"] = torch.where(improved.view(view), s["x_adv"], s["x_best"])
                s["grad_best"] = torch.where(improved.view(view), s["grad"], s["grad_best"])
                if halve is not None:  # halve eta and continue from the best point
                    h = halve.view(view)
                    s["step"] = torch.where(h, s["step"] / 2, s["step"])
                    s["x_adv"] = torch.where(h, s["x_best"], s["x_adv"])
                    s["grad"] = torch.where(h, s["grad_best"], s["grad"])
            if i == self.steps:
                break
            # 3. momentum step (Eq. 2 of the paper), with P the projection and x^k the iterate:
            #    z = P(x^k + eta * dir(grad)); x^{k+1} = P(x^k + a (z - x^k) + (1 - a)(x^k -
            #    x^{k-1})); a = 1 on the first step, else the momentum 0.75
            a = 1.0 if i == 0 else self.momentum
            xc, xa = s["x"], s["x_adv"]
            z = threat.project(xc, xa + s["step"] * threat.direction(s["grad"]))
            s["x_prev"], s["x_adv"] = xa, threat.project(
                xc, xa + a * (z - xa) + (1.0 - a) * (xa - s["x_prev"])
            )
            logits, loss, s["grad"] = self._forward(
                model, s["x_adv"], s["y"], s.get("loss_target")
            )
        res_best.index_copy_(0, s["idx"], s["x_best"])
        res_loss.index_copy_(0, s["idx"], rule.best)
        return res_adv, res_ok, res_best, res_loss


@register_attack("apgd-dlr")
@dataclass
class APGDDLR(APGD):
    """APGD with the DLR loss (the second member of AutoAttack's ``apgd-dlr`` variant)."""

    name: ClassVar[str] = "apgd-dlr"
    loss: str = "dlr"
