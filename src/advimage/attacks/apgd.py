"""Auto-PGD (APGD-CE, APGD-DLR) and its targeted variant APGD-T.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020. APGD is PGD with momentum whose step size needs no tuning:
it starts at ``2 * eps`` and is halved at checkpoints where progress stalled (the two conditions
of Sec. 3.2), restarting from the best point found so far. APGD-T runs the targeted DLR loss
against each of the top-k other classes in turn, each run only on points still classified
correctly, which makes it the strongest single member of AutoAttack.

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

from advimage.attacks.base import Attack, Model, check_positive_float, check_positive_int
from advimage.attacks.loop import input_gradient
from advimage.attacks.losses import get_loss, is_success
from advimage.attacks.registry import register_attack

__all__ = ["APGD", "APGDT", "StepSizeRule", "apgd_checkpoints"]

_LOSSES = ("ce", "dlr")


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

    1. the loss increased in fewer than ``rho * (w_j - w_{j-1})`` of the iterations since the
       previous checkpoint (counting ``f(x^(i+1)) > f(x^(i))``), or
    2. the step size was not halved at ``w_{j-1}`` and the best loss did not improve since.

    Feed it the per-sample loss of every iterate with :meth:`update`; :meth:`select` keeps the
    state of a subset when the attack drops finished samples.

    This follows the paper's text: condition 1 is a strict ``<`` and counts the step from the
    starting point, and condition 2 may already fire at ``w_1`` (the reference code uses ``<=``
    and skips condition 2 at the first checkpoint); the robust accuracies agree in practice.
    """

    def __init__(self, steps: int, loss0: Tensor, rho: float = 0.75) -> None:
        self.checkpoints = frozenset(apgd_checkpoints(steps))
        self.rho = rho  # fraction of iterations that must increase the loss
        self.last_check = 0  # w_{j-1}
        self.prev_loss = loss0.detach().clone()  # f(x^(i)), shape (B,)
        self.n_increase = torch.zeros_like(self.prev_loss)  # increases since w_{j-1}
        self.best = self.prev_loss.clone()  # f_max so far
        self.best_at_check = self.best.clone()  # f_max at w_{j-1}
        self.halved_at_check = torch.zeros_like(self.prev_loss, dtype=torch.bool)

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
        cond1 = self.n_increase < self.rho * (it - self.last_check)
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


@register_attack("apgd-t")
@dataclass
class APGDT(APGD):
    """Targeted APGD over the top-k other classes (APGD-T of Croce & Hein, 2020).

    Without ``target``: for each of the ``n_target_classes`` classes with the highest clean
    logits after the predicted one, run APGD with the *targeted* loss towards that class on the
    points still classified correctly; success means misclassified (any class), so APGD-T is an
    untargeted attack that uses targeted losses to escape the gradient masking of CE/DLR. With
    ``target``: one targeted run (per restart) towards ``target``, success means hitting it.

    Args (besides APGD's):
        loss: ``"dlr"`` (targeted DLR, default) or ``"ce"`` (targeted cross-entropy).
        n_target_classes: How many runner-up classes to try (9 in AutoAttack); capped at
            ``num_classes - 1``.
    """

    name: ClassVar[str] = "apgd-t"
    loss: str = "dlr"
    n_target_classes: int = 9

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self.n_target_classes, "n_target_classes")

    def _run(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        generator: torch.Generator | None,
    ) -> Tensor:
        if target is not None:
            return super()._run(model, x, y, target, generator)
        out, done, best_loss = self._init_result(model, x, y, None)
        with torch.no_grad():
            order = model(x).argsort(dim=1, descending=True)  # (B, K) classes by clean logit
        n_targets = min(self.n_target_classes, order.shape[1] - 1)
        for j in range(1, n_targets + 1):
            # j-th runner-up; differs from y on every point not yet done (there y is top-1)
            loss_target = order[:, j]  # (B,)
            for _ in range(self.restarts):
                self._restart(model, x, y, None, loss_target, generator, out, done, best_loss)
        return out
