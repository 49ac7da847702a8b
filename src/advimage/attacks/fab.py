"""FAB and FAB-T: the Fast Adaptive Boundary attack (minimal-norm, white-box), linf, l2, l1.

Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive boundary attack",
ICML 2020. Each step linearises the classifier at the iterate, picks the closest linearised
decision boundary (untargeted FAB: over all classes; FAB-T: the boundary towards one target
class), projects both the iterate and the clean image onto it inside the pixel box
(:mod:`advimage.attacks.fab_projections`), and moves to a convex combination of the two
projections, extrapolated by ``eta``; ``alpha`` biases it towards the clean image's projection
(at most ``alpha_max``); the closest boundary is the one nearest in the attack's norm,
``|f| / ||grad f||_*`` with the dual norm (l1 for linf, l2 for l2, linf for l1). Whenever the
iterate is adversarial it is recorded if it is the closest so far and pulled back towards the
clean image by ``beta``. FAB-T (used by AutoAttack,
Croce & Hein, ICML 2020b) runs this with the targeted boundary against each of the
``n_target_classes`` runner-up classes in turn; success still means misclassified.

Budgets and constants are the reference code's (auto-attack's ``fab_base.py``): 100 steps,
``alpha_max = 0.1``, ``eta = 1.05``, ``beta = 0.9``, restarts after the first from a random
point at half ``eps``. Departures, all deliberate: with a finite ``eps`` and ``early_stop`` a
row stops once it has an adversarial point within ``eps`` (it cannot count more as fooled; the
reference keeps shrinking it); random starts draw from the attack's generator and sit at
``eps / 2`` (the reference: ``min(eps, best norm so far) / 2``).
:meth:`FAB.run` also returns each sample's smallest adversarial norm found.

Cost per step, as in the reference: one linearisation (a forward pass with its input-gradient
backward pass: one for FAB-T, one per class for FAB) and one forward pass that judges the new
iterate. On a CPU that judging pass runs through the checked, inference-optimised trace of
:mod:`advimage.attacks.fast_forward` (``fast_queries``), like Square's queries. An earlier
version judged the iterate with the next step's linearisation and linearised the rows pulled
back by ``beta`` again; on robust points about half the rows are pulled back at every step,
so that made more gradient passes than the reference (``bench/autoattack_passes.py``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from advimage.attacks import gradient
from advimage.attacks.base import (
    AttackResult,
    Model,
    check_positive_float,
    check_positive_int,
)
from advimage.attacks.fab_projections import project_onto_boundary
from advimage.attacks.fast_forward import inference_forward
from advimage.attacks.losses import is_success
from advimage.attacks.registry import register_attack
from advimage.attacks.restarts import ActiveRows, BestSoFar, RunOutcome, rows_view, take
from advimage.attacks.result_attack import ResultAttack

__all__ = ["FAB", "FABT", "FABResult"]

_NOT_THIS_CLASS = 1e10  # the reference's "distance" of the true class's own boundary
_DIV_TINY = 1e-12
_NORM_TINY = 1e-8
# per attack norm: the norm the step measures in, and its dual (the boundary distances)
_ORDER = {"linf": math.inf, "l2": 2.0, "l1": 1.0}
_DUAL = {"linf": 1.0, "l2": 2.0, "l1": math.inf}


@dataclass(frozen=True)
class FABResult(AttackResult):
    """A FAB run (:meth:`FAB.run`).

    Attributes:
        x_adv: Adversarial images (the clean image where none was found within ``eps``).
        norms: ``(B,)`` distance of the closest adversarial point found, in the attack's norm
            (``inf`` where none was found, 0 for points misclassified before the attack).
    """

    norms: Tensor


@register_attack("fab")
@dataclass
class FAB(ResultAttack[FABResult]):
    """Untargeted FAB (Croce & Hein, ICML 2020), linf, l2 and l1.

    Args (dataclass fields):
        eps: Radius of the threat model; ``inf`` for a pure minimal-norm attack.
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.
        steps: Iterations per run (100 in the reference).
        restarts: Runs per point; runs after the first start at a random point at ``eps / 2``.
        alpha_max: Largest weight of the clean image's projection (0.1).
        eta: Overshoot of the projection step (1.05).
        beta: Backward step towards the clean image after an adversarial iterate (0.9).
        early_stop: With a finite ``eps``, stop a row once it is fooled within ``eps``.
        fast_queries: Judge each iterate (one forward pass per step) through an
            inference-optimised trace of the model where it is safe (CPU, eval mode,
            deterministic, logits checked against the eager model; see
            :mod:`advimage.attacks.fast_forward`), else the model itself. The linearisation
            always uses the model itself.
    """

    name: ClassVar[str] = "fab"
    supports_targeted: ClassVar[bool] = False
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2", "l1")
    steps: int = 100
    restarts: int = 1
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9
    early_stop: bool = True
    fast_queries: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()  # refuses norms outside ``norms`` in one line
        check_positive_int(self.steps, "steps")
        check_positive_int(self.restarts, "restarts")
        if self.restarts > 1 and math.isinf(self.eps):
            raise ValueError(f"{self.name}: random restarts need a finite eps")
        if not 0.0 <= self.alpha_max <= 1.0:
            raise ValueError(f"alpha_max must be in [0, 1], got {self.alpha_max}")
        check_positive_float(self.eta, "eta")
        if not 0.0 < self.beta <= 1.0:
            raise ValueError(f"beta must be in (0, 1], got {self.beta}")

    def _boundary_targets(
        self, model: Model, x: Tensor, target: Tensor | None
    ) -> list[Tensor | None]:
        """The classes whose boundary each round of runs aims at (``None``: all classes)."""
        return [None]

    def _result(
        self, model: Model, x: Tensor, y: Tensor, target: Tensor | None, gen: torch.Generator
    ) -> FABResult:
        """All rounds and restarts, each on the rows not yet fooled within ``eps``."""
        with torch.no_grad():
            best = BestSoFar(x, is_success(model(x), y, target))
            query = model  # judges each iterate: the optimised trace where it is safe
            if self.fast_queries and not bool(best.done.all()):
                query = inference_forward(model, x[~best.done])[0]
        clean_done = best.done.clone()
        for aim in self._boundary_targets(model, x, target):
            for r in range(self.restarts):
                todo = best.todo()
                if todo.numel() == 0:
                    break
                outcome = self._single_run(
                    model, query, take(x, todo), take(y, todo), take(aim, todo),
                    take(target, todo), r > 0, gen,
                )
                best.merge(todo, *outcome)
        norms = torch.where(clean_done, 0.0, -best.loss)  # loss = -norm of the best found
        x_adv = torch.where(rows_view(best.done, x), best.x, x)  # outside eps: the clean image
        return FABResult(x_adv, norms)

    # ------------------------------------------------------------------ one run
    def _single_run(
        self,
        model: Model,
        query: Model,
        x0: Tensor,
        y: Tensor,
        aim: Tensor | None,
        target: Tensor | None,
        random_start: bool,
        gen: torch.Generator,
    ) -> RunOutcome:
        """One FAB run: per row the closest adversarial point, success = within ``eps``,
        loss = minus its distance (``-inf`` where none was found). Each step costs one
        gradient pass (the linearisation at ``x1``) and one forward pass through ``query``
        that judges the new iterate, as in the reference."""
        threat = self.threat
        x1 = self._random_start(x0, gen) if random_start else x0.clone()
        rows = ActiveRows(x0)
        best_x, res = x0.clone(), torch.full((len(x0),), math.inf, device=x0.device)
        stop = self.early_stop and math.isfinite(self.eps)
        for _ in range(self.steps):
            df, dg = self._linearise(model, x1, y, aim)
            x1 = self._step(x1, x0, df, dg)
            with torch.no_grad():
                is_adv = is_success(query(x1), y, target)  # (b,)
            dist = threat.distance(x0, x1).to(res.dtype)
            closer = is_adv & (dist < res)
            best_x = torch.where(rows_view(closer, x1), x1, best_x)
            res = torch.where(closer, dist, res)
            x1 = torch.where(rows_view(is_adv, x1), x0 + (x1 - x0) * self.beta, x1)
            if stop and bool((res <= self.eps).any()):
                keep = rows.retire(res <= self.eps, best_x, -res)
                if keep.numel() == 0:
                    return rows.outcome()
                x0, y, x1 = (take(t, keep) for t in (x0, y, x1))
                best_x, res = take(best_x, keep), take(res, keep)
                aim, target = take(aim, keep), take(target, keep)
        rows.finish(best_x, -res, res <= self.eps)
        return rows.outcome()

    def _random_start(self, x0: Tensor, gen: torch.Generator) -> Tensor:
        """A random point at distance ``eps / 2`` (the reference's restart), in the box:
        a uniform (linf) or Gaussian (l2, l1) direction scaled to that norm."""
        if self.norm == "linf":
            t = 2 * torch.rand(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype) - 1
            scale = t.flatten(1).abs().amax(dim=1)
        else:
            t = torch.randn(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype)
            scale = t.flatten(1).norm(dim=1) if self.norm == "l2" else t.flatten(1).abs().sum(1)
        return self.threat.clamp(x0 + 0.5 * self.eps * t / rows_view(scale, t))

    def _step(self, x1: Tensor, x0: Tensor, df: Tensor, dg: Tensor) -> Tensor:
        """One FAB step from ``x1`` (Eq. 5-7 of the paper) given the linearisation at ``x1``
        (:meth:`_linearise`): project ``x1`` and ``x0`` onto the closest linearised boundary
        and move to their biased, extrapolated combination."""
        b = len(x1)
        dual = _DUAL[self.norm]
        dist = df.abs() / (_DIV_TINY + torch.linalg.vector_norm(dg, ord=dual, dim=2))
        ind = dist.argmin(dim=1)
        u = torch.arange(b, device=x1.device)
        w, f = dg[u, ind], df[u, ind]  # (b, D), (b,)
        x1f, x0f = x1.reshape(b, -1), x0.reshape(b, -1)
        off = -f + (w * x1f).sum(dim=1)
        d3 = project_onto_boundary(
            self.norm, torch.cat((x1f, x0f)), torch.cat((w, w)), torch.cat((off, off)),
            self.threat.bounds,
        )
        a0 = torch.linalg.vector_norm(d3, ord=_ORDER[self.norm], dim=1, keepdim=True)
        a0 = a0.clamp_min(_NORM_TINY)
        a1, a2 = a0[:b], a0[b:]
        alpha = (a1 / (a1 + a2)).clamp(0.0, self.alpha_max)  # (b, 1)
        new = (x1f + self.eta * d3[:b]) * (1 - alpha) + (x0f + self.eta * d3[b:]) * alpha
        return self.threat.clamp(new.reshape(x1.shape))

    @staticmethod
    def _linearise(
        model: Model, x1: Tensor, y: Tensor, aim: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Logit differences ``f_j - f_y`` ``(b, m)`` at ``x1`` and their input gradients
        ``(b, m, D)`` (all classes, ``f_y``'s own entry set far away, or the one class
        ``aim``), in slices of ``GRADIENT_ROWS`` rows (:mod:`advimage.attacks.gradient`)."""
        df, dg = gradient.in_row_slices(functools.partial(FAB._linearise_rows, model),
                                        gradient.GRADIENT_ROWS, x1, y, aim)
        return df, dg

    @staticmethod
    def _linearise_rows(
        model: Model, x1: Tensor, y: Tensor, aim: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """:meth:`_linearise` in one forward pass."""
        xg = x1.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xg)  # (b, K)
            u = torch.arange(len(x1), device=x1.device)
            if aim is not None:
                diff = logits[u, aim] - logits[u, y]  # (b,)
                (grad,) = torch.autograd.grad(diff.sum(), xg)
                return diff.detach().unsqueeze(1), grad.reshape(len(x1), 1, -1)
            grads = []
            for k in range(logits.shape[1]):  # one backward pass per class (the Jacobian)
                (g,) = torch.autograd.grad(logits[:, k].sum(), xg, retain_graph=True)
                grads.append(g.reshape(len(x1), -1))
        jac = torch.stack(grads, dim=1)  # (b, K, D)
        z = logits.detach()
        df = z - z[u, y].unsqueeze(1)
        df[u, y] = _NOT_THIS_CLASS
        return df, jac - jac[u, y].unsqueeze(1)


@register_attack("fab-t")
@dataclass
class FABT(FAB):
    """FAB-T: FAB towards each of the top-k runner-up classes in turn (AutoAttack's member).

    Without ``target``: for each of the ``n_target_classes`` classes with the highest clean
    logits after the predicted one, FAB with that class's boundary on the points not yet
    fooled; success means misclassified. With ``target``: FAB towards ``target``, success
    means classified as ``target``.

    Args (besides FAB's):
        n_target_classes: Runner-up classes to try (9 in AutoAttack), capped at ``K - 1``.
    """

    name: ClassVar[str] = "fab-t"
    supports_targeted: ClassVar[bool] = True
    n_target_classes: int = 9

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self.n_target_classes, "n_target_classes")

    def _boundary_targets(
        self, model: Model, x: Tensor, target: Tensor | None
    ) -> list[Tensor | None]:
        if target is not None:
            return [target]
        with torch.no_grad():
            order = model(x).argsort(dim=1, descending=True)  # (B, K) classes by clean logit
        n = min(self.n_target_classes, order.shape[1] - 1)
        return [order[:, j] for j in range(1, n + 1)]
