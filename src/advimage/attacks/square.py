"""Square Attack: a score-based black-box attack by random search (linf and l2).

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV 2020. Starting from vertical stripes of +-eps, each query pastes
a random square of side ``s`` (per channel +-eps) onto the current best point and keeps it when
the margin loss drops (l2: a square of the paper's eta pattern takes over the perturbation
mass of the square and of a second random square, keeping the point on the eps-sphere). The
square's area fraction ``p`` follows the paper's piecewise-constant
schedule, shrinking from ``p_init`` as queries are spent. No gradients are used, so the attack is
immune to gradient masking; that is why AutoAttack includes it.

Only samples not yet fooled are queried (each sample's own square position and signs, batched);
the number of model evaluations per sample is kept in :attr:`Square.last_queries`. On a CPU the
queries run through an inference-optimised trace of the model where it is checked to give the
model's logits (:func:`advimage.attacks.fast_forward.inference_forward`; 1.7-3x faster queries).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from advimage.attacks.base import Attack, Model, check_positive_float, check_positive_int
from advimage.attacks.fast_forward import inference_forward
from advimage.attacks.losses import get_loss, is_success
from advimage.attacks.registry import register_attack

__all__ = ["Square", "square_p_schedule"]

_LOSSES = ("margin", "ce")

# Piecewise-constant schedule of the paper for a 10,000-query budget: (last iteration, divisor
# of p_init). Iterations are rescaled to the actual budget first.
_P_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64),
               (6000, 128), (8000, 256))


def square_p_schedule(it: int, queries: int, p_init: float) -> float:
    """Fraction ``p`` of pixels the square covers at iteration ``it`` (0-based).

    The reference schedule halves ``p`` at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000
    and 8000 of a 10,000-query run; other budgets rescale ``it`` to that range.
    """
    it_resc = int(it / queries * 10000)
    for last, div in _P_SCHEDULE:
        if it_resc <= last:
            return p_init / div
    return p_init / 512


@register_attack("square")
@dataclass
class Square(Attack):
    """Square Attack (Andriushchenko et al., ECCV 2020), linf and l2, batched.

    Args (dataclass fields):
        eps: linf radius (pixel units).
        norm: ``"linf"`` or ``"l2"``.
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

    After each call, :attr:`last_queries` holds the queries spent per sample (B,) (zero for
    samples that were already misclassified; the clean prediction check is not counted) and
    :attr:`last_forward` says which forward answered them (``"torchscript"`` or ``"eager"``).
    """

    name: ClassVar[str] = "square"
    queries: int = 5000
    p_init: float = 0.8
    restarts: int = 1
    loss: str = "margin"
    fast_queries: bool = True
    last_queries: Tensor | None = field(default=None, init=False, repr=False, compare=False)
    last_forward: str = field(default="eager", init=False, repr=False, compare=False)

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
        """``(success, loss)``, both (B,); the loss is MINIMISED by the search."""
        return is_success(logits, y, target), -get_loss(self.loss)(logits, y, target)

    def _random_sign(self, shape: tuple[int, ...], like: Tensor, gen: torch.Generator) -> Tensor:
        bits = torch.randint(0, 2, shape, generator=gen, device=like.device)
        return bits.to(like.dtype) * 2 - 1

    def _run(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"square needs NCHW images, got shape {tuple(x.shape)}")
        with torch.no_grad():
            done = is_success(model(x), y, target)  # (B,) already fooled: nothing to do
            out = x.clone()  # (B, C, H, W)
            best = torch.full(y.shape, math.inf, dtype=x.dtype, device=x.device)  # (B,)
            used = torch.zeros_like(y)  # (B,) queries per sample
            query, self.last_forward = model, "eager"
            if self.fast_queries and not bool(done.all()):
                query, self.last_forward = inference_forward(model, x[~done])
            for _ in range(self.restarts):
                todo = (~done).nonzero().flatten()
                if todo.numel() == 0:
                    break
                tt = None if target is None else target.index_select(0, todo)
                xb, ok, lb, nq = self._single_run(
                    query, x.index_select(0, todo), y.index_select(0, todo), tt, generator
                )
                take = ok | (lb < best.index_select(0, todo))  # fooled, else lowest loss
                cur = out.index_select(0, todo)
                out.index_copy_(0, todo, torch.where(take.view(-1, 1, 1, 1), xb, cur))
                best.index_copy_(0, todo, torch.minimum(lb, best.index_select(0, todo)))
                done.index_copy_(0, todo, ok)
                used.index_add_(0, todo, nq)
        self.last_queries = used
        return out

    def _single_run(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        gen: torch.Generator,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One random search.

        Returns:
            Best points (B, C, H, W), success (B,), their loss (B,), queries spent (B,).
        """
        n = x.shape[0]
        x_best = self._init_linf(x, gen) if self.norm == "linf" else self._init_l2(x, gen)
        ok, loss = self._scores(model(x_best), y, target)
        res_x, res_ok, res_loss = x_best.clone(), ok.clone(), loss.clone()
        res_q = torch.ones_like(y)
        idx = torch.arange(n, device=x.device)  # rows of the active samples in the result
        tgt = target
        for it in range(self.queries - 1):
            if bool(ok.any()):  # drop fooled samples: they are never queried again
                hit = idx[ok]
                res_x.index_copy_(0, hit, x_best[ok])
                res_ok.index_fill_(0, hit, True)
                res_loss.index_copy_(0, hit, loss[ok])
                keep = (~ok).nonzero().flatten()
                if keep.numel() == 0:
                    break
                idx, x, y, x_best, loss, ok = (
                    t.index_select(0, keep) for t in (idx, x, y, x_best, loss, ok)
                )
                tgt = None if tgt is None else tgt.index_select(0, keep)
            p = square_p_schedule(it, self.queries, self.p_init)
            if self.norm == "linf":
                x_new = self._propose_linf(x, x_best, p, gen)
            else:
                x_new = self._propose_l2(x, x_best, p, gen)
            ok_new, loss_new = self._scores(model(x_new), y, tgt)
            better = (loss_new < loss) | ok_new
            x_best = torch.where(better.view(-1, 1, 1, 1), x_new, x_best)
            loss = torch.where(better, loss_new, loss)
            ok = ok_new
            res_q.index_add_(0, idx, torch.ones_like(idx))
        else:
            hit = idx[ok]  # successes of the final query
            res_x.index_copy_(0, hit, x_best[ok])
            res_ok.index_fill_(0, hit, True)
        rest = idx[~ok]
        res_x.index_copy_(0, rest, x_best[~ok])
        res_loss.index_copy_(0, rest, loss[~ok])
        return res_x, res_ok, res_loss, res_q

    # ------------------------------------------------------------------ windows
    def _windows(self, x: Tensor, s: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """A random s x s window per sample: mask (b, 1, H, W), local row (b, H) / col (b, W)
        index into the window (clamped outside it)."""
        b, _, h, w = x.shape
        vh = torch.randint(0, h - s + 1, (b, 1), generator=gen, device=x.device)  # top row
        vw = torch.randint(0, w - s + 1, (b, 1), generator=gen, device=x.device)  # left col
        li = torch.arange(h, device=x.device) - vh  # (b, H) row inside the window
        lj = torch.arange(w, device=x.device) - vw  # (b, W)
        mask = ((li >= 0) & (li < s))[:, None, :, None] & ((lj >= 0) & (lj < s))[:, None, None, :]
        return mask, li.clamp(0, s - 1), lj.clamp(0, s - 1)

    # ------------------------------------------------------------------ linf
    def _init_linf(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """Vertical stripes: one sign per (sample, channel, column), at distance eps."""
        n, c, _, w = x.shape
        return self.threat.project(x, x + self.eps * self._random_sign((n, c, 1, w), x, gen))

    def _propose_linf(self, x: Tensor, x_best: Tensor, p: float, gen: torch.Generator) -> Tensor:
        """Paste an s x s square whose channels jump to x +- eps onto ``x_best``."""
        b, c, h, w = x.shape
        s = min(max(int(round(math.sqrt(p * h * w))), 1), h, w)  # side of the square (px)
        mask, _, _ = self._windows(x, s, gen)
        corner = x + self.eps * self._random_sign((b, c, 1, 1), x, gen)  # (b, C, H, W)
        return self.threat.clamp(torch.where(mask, corner, x_best))

    # ------------------------------------------------------------------ l2
    def _init_l2(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """A grid of s x s :func:`_eta` blocks (s = H // 5) with random signs, rescaled to eps."""
        n, c, h, w = x.shape
        s = max(h // 5, 1)
        eta = _eta(s, x, transpose=False)  # (s, s)
        delta = torch.zeros_like(x)  # (B, C, H, W)
        start = (h - 5 * s) // 2 if h >= 5 * s else 0
        for top in range(start, h, s):  # block positions, not samples: <= 25-64 iterations
            for left in range(start, w, s):
                hh, ww = min(s, h - top), min(s, w - left)
                sign = self._random_sign((n, c, 1, 1), x, gen)
                delta[:, :, top:top + hh, left:left + ww] += eta[:hh, :ww] * sign
        return self._on_sphere(x, delta)

    def _on_sphere(self, x: Tensor, delta: Tensor) -> Tensor:
        """``clip(x + eps * delta / ||delta||_2)``: the proposal sits on the eps-sphere."""
        return self.threat.clamp(x + self.eps * delta / (_l2(delta) + 1e-12))

    def _propose_l2(self, x: Tensor, x_best: Tensor, p: float, gen: torch.Generator) -> Tensor:
        """Move the mass of window 2 into window 1 (Alg. 3 of the paper), batched per sample."""
        b, c, h, w = x.shape
        s = max(int(round(math.sqrt(p * h * w))), 3)
        s = min(s + 1 - s % 2, h, w)  # odd side, at most the image
        delta = x_best - x  # (b, C, H, W)
        mask1, li, lj = self._windows(x, s, gen)
        mask2, _, _ = self._windows(x, s, gen)
        norm_img = _l2(delta)  # (b, 1, 1, 1)
        norm_win = _l2(delta * (mask1 | mask2))  # (b, 1, 1, 1) mass in both windows
        in1 = delta * mask1
        norm_in1 = in1.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()  # (b, C, 1, 1)
        # the eta pattern placed at each sample's window 1, randomly transposed per sample
        etas = torch.stack([_eta(s, x, False), _eta(s, x, True)])  # (2, s, s)
        flip = torch.randint(0, 2, (b, 1, 1), generator=gen, device=x.device)
        eta_img = etas[flip, li[:, :, None], lj[:, None, :]][:, None] * mask1  # (b, 1, H, W)
        new = eta_img * self._random_sign((b, c, 1, 1), x, gen) + in1 / (norm_in1 + 1e-12)
        new_norm = new.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()  # (b, C, 1, 1)
        budget = ((self.eps**2 - norm_img**2).clamp_min(0.0) / c + norm_win**2).sqrt()
        new = new / (new_norm + 1e-12) * budget  # (b, C, H, W), zero outside window 1
        delta = torch.where(mask1, new, torch.where(mask2, torch.zeros_like(delta), delta))
        return self._on_sphere(x, delta)


def _l2(t: Tensor) -> Tensor:
    """Per-sample l2 norm, shape (B, 1, 1, 1)."""
    return t.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


def _eta(s: int, like: Tensor, transpose: bool) -> Tensor:
    """The l2 square pattern of the paper, (s, s), unit Frobenius norm.

    Two stacked halves of opposite sign; each half weighs pixel (i, j) by
    ``sum_{k >= d} 1 / (k + 1)^2`` with ``d`` its Chebyshev distance to the half's centre, so
    the mass concentrates in the middle of each half.
    """
    top = _rect(s // 2, s, like)
    bottom = _rect(s - s // 2, s, like)
    eta = torch.cat([top, -bottom], dim=0)
    eta = eta / eta.norm().clamp_min(1e-12)
    return eta.t() if transpose else eta


def _rect(a: int, b: int, like: Tensor) -> Tensor:
    """(a, b) block of concentric rectangles around (a // 2, b // 2), unit norm (empty if a=0)."""
    if a == 0:
        return torch.zeros(0, b, dtype=like.dtype, device=like.device)
    i = torch.arange(a, device=like.device)[:, None] - a // 2
    j = torch.arange(b, device=like.device)[None, :] - b // 2
    d = torch.maximum(i.abs(), j.abs())  # (a, b) Chebyshev distance
    k = torch.arange(max(a // 2, b // 2) + 1, device=like.device, dtype=like.dtype)  # rings
    weights = 1.0 / (k + 1) ** 2
    r = ((k >= d[..., None]).to(like.dtype) * weights).sum(-1)
    return r / r.norm().clamp_min(1e-12)
