"""Square Attack: a score-based black-box attack by random search (linf).

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV 2020. Starting from vertical stripes of +-eps, each query pastes
a random square of side ``s`` (per channel +-eps) onto the current best point and keeps it when
the margin loss drops. The square's area fraction ``p`` follows the paper's piecewise-constant
schedule, shrinking from ``p_init`` as queries are spent. No gradients are used, so the attack is
immune to gradient masking; that is why AutoAttack includes it.

Only samples not yet fooled are queried (each sample's own square position and signs, batched);
the number of model evaluations per sample is kept in :attr:`Square.last_queries`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from advimage.attacks.base import Attack, Model, check_positive_float, check_positive_int
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
    """Square Attack (Andriushchenko et al., ECCV 2020), linf, batched.

    Args (dataclass fields):
        eps: linf radius (pixel units).
        norm: only ``"linf"`` is implemented.
        seed: Seed of the random search (``None``: nondeterministic).
        queries: Model evaluations per sample and restart (5000 in AutoAttack), the stripe
            initialisation included; samples stop being queried once fooled.
        p_init: Initial fraction of pixels changed per query (0.8 in the paper for linf).
        restarts: Independent runs, each only on samples not yet fooled.
        loss: ``"margin"`` (``z_y - max_{j!=y} z_j``, the paper's choice) or ``"ce"``; with a
            target the targeted margin/cross-entropy is used.

    After each call, :attr:`last_queries` holds the queries spent per sample (B,) (zero for
    samples that were already misclassified; the clean prediction check is not counted).
    """

    name: ClassVar[str] = "square"
    queries: int = 5000
    p_init: float = 0.8
    restarts: int = 1
    loss: str = "margin"
    last_queries: Tensor | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.norm != "linf":
            raise ValueError(f"square supports norm 'linf' only, got {self.norm!r}")
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
            for _ in range(self.restarts):
                todo = (~done).nonzero().flatten()
                if todo.numel() == 0:
                    break
                tt = None if target is None else target.index_select(0, todo)
                xb, ok, lb, nq = self._single_run(
                    model, x.index_select(0, todo), y.index_select(0, todo), tt, generator
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
        threat = self.threat
        n, c, h, w = x.shape
        dev = x.device
        # vertical stripes: one sign per (sample, channel, column), query 1
        x_best = threat.project(x, x + self.eps * self._random_sign((n, c, 1, w), x, gen))
        ok, loss = self._scores(model(x_best), y, target)
        res_x, res_ok, res_loss = x_best.clone(), ok.clone(), loss.clone()
        res_q = torch.ones_like(y)
        idx = torch.arange(n, device=dev)  # rows of the active samples in the result
        tgt = target
        rows = torch.arange(h, device=dev)
        cols = torch.arange(w, device=dev)
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
            b = x.shape[0]
            p = square_p_schedule(it, self.queries, self.p_init)
            s = min(max(int(round(math.sqrt(p * h * w))), 1), h, w)  # side of the square (px)
            vh = torch.randint(0, h - s + 1, (b, 1), generator=gen, device=dev)  # top row
            vw = torch.randint(0, w - s + 1, (b, 1), generator=gen, device=dev)  # left column
            in_h = (rows >= vh) & (rows < vh + s)  # (b, H)
            in_w = (cols >= vw) & (cols < vw + s)  # (b, W)
            mask = in_h[:, None, :, None] & in_w[:, None, None, :]  # (b, 1, H, W)
            # inside the square each channel jumps to a corner of the ball: x +- eps
            corner = x + self.eps * self._random_sign((b, c, 1, 1), x, gen)  # (b, C, H, W)
            x_new = threat.clamp(torch.where(mask, corner, x_best))
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
