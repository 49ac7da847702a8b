"""Square Attack: a score-based black-box attack by random search (linf, l2 and l1).

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV 2020. Starting from vertical stripes of +-eps, each query pastes
a random square of side ``s`` (per channel +-eps) onto the current best point and keeps it when
the margin loss drops (l2: a square of the paper's eta pattern takes over the perturbation
mass of the square and of a second random square, keeping the point on the eps-sphere; l1: the
same move with the l1 pattern and masses of Croce & Hein's auto-attack code, each proposal and
the initial grid projected exactly onto the l1 ball in the box). The square's area fraction
``p`` follows the paper's piecewise-constant schedule, shrinking from ``p_init`` as queries are
spent. No gradients are used, so the attack is immune to gradient masking; that is why
AutoAttack includes it.

Only samples not yet fooled are queried (each sample's own square position and signs, batched;
``reference_draws``: one per query for the whole batch, as the original AutoAttack's L-inf Square);
:meth:`Square.run` reports the number of model evaluations per sample. On a CPU the
queries run through an inference-optimised trace of the model where it is checked to give the
model's logits (:func:`advimage.attacks.fast_forward.inference_forward`; 1.7-3x faster queries).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from advimage.attacks.base import (
    AttackResult,
    Model,
    check_positive_float,
    check_positive_int,
)
from advimage.attacks.fast_forward import inference_forward
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
from advimage.attacks.result_attack import ResultAttack
from advimage.attacks.square_patterns import (
    eta_grid,
    placed_eta,
    random_sign,
    random_windows,
    reference_sign,
    reference_window,
)
from advimage.lp_balls import lp_norms, project_l1_box
from advimage.threat import l2_norms

__all__ = ["Square", "SquareResult", "square_p_schedule"]

_LOSSES = ("margin", "ce")

# Piecewise-constant schedule of the paper for a 10,000-query budget: (last iteration, divisor
# of p_init). Iterations are rescaled to the actual budget first.
_P_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64),
               (6000, 128), (8000, 256))


def square_p_schedule(it: int, queries: int, p_init: float, rescale: bool = True) -> float:
    """Fraction ``p`` of pixels the square covers at iteration ``it`` (0-based).

    The reference schedule halves ``p`` at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000
    and 8000 of a 10,000-query run; with ``rescale`` other budgets rescale ``it`` to that
    range, without it (AutoAttack's Square, ``resc_schedule=False``) the iteration is used as is.
    """
    it_resc = int(it / queries * 10000) if rescale else it
    for last, div in _P_SCHEDULE:
        if it_resc <= last:
            return p_init / div
    return p_init / 512


@dataclass(frozen=True)
class SquareResult(AttackResult):
    """A Square Attack run (:meth:`Square.run`).

    Attributes:
        x_adv: Adversarial images, like the attack's call returns them.
        queries: ``(B,)`` model evaluations spent per sample over all restarts (zero for samples
            already misclassified; the clean prediction check is not counted), on the device the
            attack ran on.
        forward: Which forward answered the queries: ``"torchscript"`` or ``"eager"``.
    """

    queries: Tensor
    forward: str


@register_attack("square")
@dataclass
class Square(ResultAttack[SquareResult]):
    """Square Attack (Andriushchenko et al., ECCV 2020), linf, l2 and l1, batched.

    Args (dataclass fields):
        eps: Radius in ``norm`` (pixel units).
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.
        seed: Seed of the random search (``None``: nondeterministic).
        queries: Model evaluations per sample and restart (5000 in AutoAttack), the stripe
            initialisation included; samples stop being queried once fooled.
        p_init: Initial fraction of pixels changed per query (0.8 in the paper for linf).
        restarts: Independent runs, each only on samples not yet fooled.
        loss: ``"margin"`` (``z_y - max_{j!=y} z_j``, the paper's choice) or ``"ce"``; with a
            target the targeted margin/cross-entropy is used.
        fast_queries: Run the queries through an inference-optimised TorchScript trace of the
            model where it is safe (CPU, eval mode, deterministic, logits checked against the
            eager model; see :mod:`advimage.attacks.fast_forward`), else the model itself.
        rescale_schedule: Stretch the paper's 10,000-query ``p`` schedule over ``queries``
            (the reference's default); AutoAttack turns it off, as the original ensemble does.
        reference_draws: L-inf: draw as the original AutoAttack's Square (``pyautoattack``)
            does, one window and one sign per channel per query for the whole batch
            (:func:`~.square_patterns.reference_window`), and make ``queries`` proposals after
            the stripes as its loop does, so that on a CPU, from the same seed and batch, it
            proposes the original's squares (AutoAttack's member; the paper's code, and the
            default, draw per sample).

    :meth:`run` returns the queries spent per sample and the forward used with the images.
    """

    name: ClassVar[str] = "square"
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2", "l1")
    queries: int = 5000
    p_init: float = 0.8
    restarts: int = 1
    loss: str = "margin"
    fast_queries: bool = True
    rescale_schedule: bool = True
    reference_draws: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_float(self.eps, "eps")
        check_positive_int(self.queries, "queries")
        check_positive_int(self.restarts, "restarts")
        if not 0.0 < self.p_init <= 1.0:
            raise ValueError(f"p_init must be in (0, 1], got {self.p_init}")
        if self.loss not in _LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of: {', '.join(_LOSSES)}")

    def _scores(
        self, logits: Tensor, y: Tensor, target: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """``(success, loss)``, both (B,); the search keeps proposals that raise the loss."""
        return is_success(logits, y, target), get_loss(self.loss)(logits, y, target)

    def _result(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        generator: torch.Generator,
    ) -> SquareResult:
        """The random search with restarts on validated inputs (the core of :meth:`run`)."""
        if x.dim() != 4:
            raise ValueError(f"square needs NCHW images, got shape {tuple(x.shape)}")
        with torch.no_grad():
            best = BestSoFar(x, is_success(model(x), y, target))  # already fooled: done
            used = torch.zeros_like(y)  # (B,) queries per sample
            query, forward = model, "eager"
            if self.fast_queries and not bool(best.done.all()):
                query, forward = inference_forward(model, x[~best.done])

            def run(idx: Tensor) -> RunOutcome:
                xb, ok, lb, nq = self._single_run(
                    query, take(x, idx), take(y, idx), take(target, idx), generator
                )
                used.index_add_(0, idx, nq)
                return xb, ok, lb

            attack_remaining(best, run, restarts=self.restarts)
        return SquareResult(best.x, used, forward)

    def _single_run(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        gen: torch.Generator,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One random search; a sample is queried until it is fooled.

        Returns:
            Best points (B, C, H, W), success (B,), their loss (B,), queries spent (B,).
        """
        init = {"linf": self._init_linf, "l2": self._init_l2, "l1": self._init_l1}[self.norm]
        propose = self._propose_linf if self.norm == "linf" else self._propose_mass
        x_best = init(x, gen)
        ok, loss = self._scores(model(x_best), y, target)
        rows = ActiveRows(x_best)
        queries = torch.ones_like(y)
        shared = self.reference_draws and self.norm == "linf"
        for it in range(self.queries - (0 if shared else 1)):
            if bool(ok.any()):  # drop fooled samples: they are never queried again
                keep = rows.retire(ok, x_best, loss)
                if keep.numel() == 0:
                    return rows.x, rows.success, rows.loss, queries
                x, y, x_best, loss = (take(t, keep) for t in (x, y, x_best, loss))
                target = take(target, keep)
            p = square_p_schedule(it, self.queries, self.p_init, self.rescale_schedule)
            x_new = propose(x, x_best, p, gen)
            ok, loss_new = self._scores(model(x_new), y, target)
            better = (loss_new > loss) | ok
            x_best = torch.where(rows_view(better, x_best), x_new, x_best)
            loss = torch.where(better, loss_new, loss)
            queries.index_add_(0, rows.idx, torch.ones_like(rows.idx))
        if bool(ok.any()):  # successes of the final query
            keep = rows.retire(ok, x_best, loss)
            x_best, loss = take(x_best, keep), take(loss, keep)
        rows.finish(x_best, loss)
        return rows.x, rows.success, rows.loss, queries

    # ------------------------------------------------------------------ linf
    def _init_linf(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """Vertical stripes: one sign per (sample, channel, column), at distance eps."""
        n, c, _, w = x.shape
        if self.reference_draws:
            return self.threat.clamp(x + self.eps * reference_sign((n, c, 1, w), x, gen))
        return self.threat.project(x, x + self.eps * random_sign((n, c, 1, w), x, gen))

    def _propose_linf(self, x: Tensor, x_best: Tensor, p: float, gen: torch.Generator) -> Tensor:
        """Paste an s x s square whose channels jump to x +- eps onto ``x_best``."""
        b, c, h, w = x.shape
        s = min(max(int(round(math.sqrt(p * h * w))), 1), h, w)  # side of the square (px)
        if self.reference_draws:  # x_best + 2 eps sign in the window, projected (its bits)
            mask, sign = reference_window(x, s, gen)
            deltas = torch.where(mask, 2.0 * self.eps * sign, torch.zeros_like(sign))
            return self.threat.project_apgd(x, x_best + deltas)
        mask, _, _ = random_windows(x, s, gen)
        corner = x + self.eps * random_sign((b, c, 1, 1), x, gen)  # (b, C, H, W)
        return self.threat.clamp(torch.where(mask, corner, x_best))

    # ------------------------------------------------------------------ l2 and l1
    def _init_l2(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """A grid of eta blocks with random signs (:func:`eta_grid`), rescaled to eps."""
        return self._on_sphere(x, eta_grid(x, "l2", gen))

    def _init_l1(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """The grid of l1 eta blocks (:func:`eta_grid`), projected onto the l1 ball in the
        box (the reference does not rescale it first)."""
        return self._into_l1_ball(x, eta_grid(x, "l1", gen))

    def _on_sphere(self, x: Tensor, delta: Tensor) -> Tensor:
        """``clip(x + eps * delta / ||delta||_2)``: the proposal sits on the eps-sphere."""
        return self.threat.clamp(x + self.eps * delta / (l2_norms(delta).view(-1, 1, 1, 1) + 1e-12))

    def _into_l1_ball(self, x: Tensor, delta: Tensor) -> Tensor:
        """``x + delta`` projected exactly onto the l1 ball in the box
        (:func:`~advimage.lp_balls.project_l1_box`), of radius ``eps * (1 - 1e-6)`` as in the
        reference, so float rounding of the l1 sum stays within ``eps``."""
        radius = torch.full((len(x),), self.eps * (1.0 - 1e-6), dtype=x.dtype, device=x.device)
        return self.threat.clamp(x + project_l1_box(delta, x, radius, self.threat.bounds))

    def _window_norm(self, v: Tensor) -> Tensor:
        """Per (sample, channel) norm over the pixels of ``v`` ``(b, C, H, W)`` -> (b, C, 1, 1)."""
        if self.norm == "l1":
            return v.abs().sum(dim=(2, 3), keepdim=True)
        return v.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()

    def _mass_budget(self, delta: Tensor, both: Tensor) -> Tensor:
        """The norm the new square may carry: the mass of both windows ``both`` plus the budget
        ``delta`` leaves unused, per channel (l2: Alg. 3 of the paper; l1: the reference's
        per-channel masses, whose overshoot the l1 projection then removes)."""
        c = delta.shape[1]
        if self.norm == "l1":
            unused = (self.eps - lp_norms(delta, "l1").view(-1, 1, 1, 1)).clamp_min(0.0)
            return (unused / c + self._window_norm(both)) * c  # (b, C, 1, 1)
        norm_img = l2_norms(delta).view(-1, 1, 1, 1)  # (b, 1, 1, 1)
        norm_win = l2_norms(both).view(-1, 1, 1, 1)  # mass in both windows
        return ((self.eps**2 - norm_img**2).clamp_min(0.0) / c + norm_win**2).sqrt()

    def _propose_mass(self, x: Tensor, x_best: Tensor, p: float, gen: torch.Generator) -> Tensor:
        """Move the mass of window 2 into window 1 (l2: Alg. 3 of the paper; l1: the same with
        the reference code's l1 pattern, masses and projection), batched per sample."""
        b, c, h, w = x.shape
        s = max(int(round(math.sqrt(p * h * w))), 3)
        s = min(s + 1 - s % 2, h, w)  # odd side, at most the image
        delta = x_best - x  # (b, C, H, W)
        mask1, li, lj = random_windows(x, s, gen)
        mask2, _, _ = random_windows(x, s, gen)
        budget = self._mass_budget(delta, delta * (mask1 | mask2))
        in1 = delta * mask1
        # the eta pattern placed at each sample's window 1, randomly transposed per sample
        eta_img = placed_eta(x, s, li, lj, mask1, self.norm, gen)  # (b, 1, H, W)
        new = eta_img * random_sign((b, c, 1, 1), x, gen) + in1 / (self._window_norm(in1) + 1e-12)
        new = new / (self._window_norm(new) + 1e-12) * budget  # zero outside window 1
        delta = torch.where(mask1, new, torch.where(mask2, torch.zeros_like(delta), delta))
        return self._into_l1_ball(x, delta) if self.norm == "l1" else self._on_sphere(x, delta)
