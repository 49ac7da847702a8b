"""HopSkipJump: a decision-based (label-only) black-box attack for l2 and linf.

Chen, Jordan & Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based Attack",
IEEE S&P 2020 (Algorithm 1; defaults of the authors' code, github.com/Jianbo-Lab/HSJA, which
Foolbox's ``HopSkipJumpAttack`` follows). From an adversarial starting point, each iteration

1. bisects between the clean image and the current point to the decision boundary
   (threshold ``theta = gamma / d^1.5`` for l2, ``gamma / d^2`` for linf);
2. estimates the boundary's normal from ``100 * sqrt(t)`` random probes at radius ``delta``
   (at most ``max_evals``), using only the model's top-1 decision;
3. steps along it (its sign for linf) with the geometric step-size search
   ``eps = dist / sqrt(t)``, halved until the step stays adversarial, and bisects back.

Only top-1 labels are used: the model is a black box that answers "adversarial or not". Every
model evaluation of a sample is a query and counts against its ``queries`` budget, the clean
check and the initialisation included; :meth:`HopSkipJump.run` reports them per sample, with
the perturbation norm found. A sample stops early once its perturbation is within ``eps`` (a
finite ``eps``: the attack is then a query-limited robustness test); with ``eps = inf`` (the
default) it minimises the norm until its budget or ``steps`` run out.

Where advimage departs from the paper, and why:

* Initialisation, untargeted: uniform noise (up to ``init_trials`` draws, as ART; the authors
  draw up to 10,000) blended towards the clean image by bisection (tolerance 0.001), as the
  authors' code. Targeted: the paper takes a target-class image from the caller; advimage
  takes the first image of the batch the model classifies as the target (its clean check is
  already paid for), else uniform noise as above. A sample with no adversarial start is
  returned unchanged with distance ``inf``.
* Budget: each phase stops for a sample whose budget is spent (the authors' code counts
  iterations only); the bisection keeps its adversarial end, so results stay adversarial.
* The step search gives up after 40 halvings (the reference loops until it succeeds).
* The best point over iterations is kept (the reference keeps the last; they rarely differ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import torch
from torch import Tensor

from advimage.attacks.base import (
    AttackResult,
    Model,
    check_positive_float,
    check_positive_int,
)
from advimage.attacks.fast_forward import inference_forward
from advimage.attacks.hsj_search import (
    Oracle,
    binary_search,
    estimate_direction,
    geometric_step,
    theta,
)
from advimage.attacks.registry import register_attack
from advimage.attacks.restarts import rows_view
from advimage.attacks.result_attack import ResultAttack
from advimage.threat import is_low_precision

__all__ = ["HopSkipJump", "HopSkipJumpResult"]

# Bisection tolerance (blend weight) of the initial noise blend, as in the authors' code.
_INIT_TOLERANCE = 1e-3


@dataclass(frozen=True)
class HopSkipJumpResult(AttackResult):
    """A HopSkipJump run (:meth:`HopSkipJump.run`).

    Attributes:
        x_adv: Adversarial images, like the attack's call returns them (projected into eps).
        queries: ``(B,)`` model evaluations spent per sample, clean check included.
        distances: ``(B,)`` norm of the best adversarial perturbation found before the final
            projection: 0 for samples misclassified clean, ``inf`` where none was found.
    """

    queries: Tensor
    distances: Tensor


@register_attack("hsj")
@dataclass
class HopSkipJump(ResultAttack[HopSkipJumpResult]):
    """HopSkipJump (Chen, Jordan & Wainwright, 2020), l2 and linf, label-only, batched.

    Args (dataclass fields):
        eps: Budget; a sample stops once its perturbation is within it. ``inf`` (default):
            minimise the perturbation until ``queries`` or ``steps`` run out.
        norm: ``"l2"`` (default, as the paper) or ``"linf"``.
        queries: Model evaluations allowed per sample (clean check and start included).
        steps: Most iterations (40 in the authors' code).
        init_evals: Probes of the first gradient estimate (100); iteration ``t`` uses
            ``init_evals * sqrt(t)``, at most ``max_evals`` (10,000).
        gamma: Scales the bisection threshold and the probe radius (1.0).
        init_trials: Uniform-noise draws per sample when looking for a start (100).
        batch_queries: Most images per model call (memory, not results).
        fast_queries: Answer queries with the inference-optimised trace where safe, as Square.
    """

    name: ClassVar[str] = "hsj"
    eps: float = math.inf
    norm: str = "l2"
    queries: int = 10_000
    steps: int = 40
    init_evals: int = 100
    max_evals: int = 10_000
    gamma: float = 1.0
    init_trials: int = 100
    batch_queries: int = 2048
    fast_queries: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.norm not in ("l2", "linf"):
            raise ValueError(f"hsj supports norm 'l2' or 'linf', got {self.norm!r}")
        check_positive_int(self.queries, "queries")
        check_positive_int(self.steps, "steps")
        check_positive_int(self.init_evals, "init_evals")
        check_positive_int(self.max_evals, "max_evals")
        check_positive_int(self.init_trials, "init_trials")
        check_positive_int(self.batch_queries, "batch_queries")
        check_positive_float(self.gamma, "gamma")

    def _execute(self, model: Model, x: Tensor, y: Tensor, target: Tensor | None,
                 core: Any) -> Any:
        """The base's run, with :meth:`_attack` told the caller's dtype: half-precision images
        are attacked in float32 but every query is asked, and every point kept, as it will be
        rounded to that dtype (towards the clean image); a point found on the decision
        boundary in float32 would otherwise round back to the clean side."""
        low = x.dtype if isinstance(x, Tensor) and is_low_precision(x.dtype) else None
        return super()._execute(model, x, y, target, partial(self._result, out_dtype=low))

    def _probe_input(self, x: Tensor) -> Tensor:
        return x[:1]  # the clean check below is the attack's own (counted) first query

    def _result(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        gen: torch.Generator,
        out_dtype: torch.dtype | None = None,
    ) -> HopSkipJumpResult:
        """The whole attack on validated inputs (the core of :meth:`run`); ``out_dtype``: the
        caller's low-precision dtype, if any (see :meth:`_execute`)."""
        query = model
        if self.fast_queries:
            query = inference_forward(model, x)[0]
        snap = None
        if out_dtype is not None:
            def snap(idx: Tensor, pts: Tensor) -> Tensor:
                return self.threat.project(x[idx].to(out_dtype), pts).to(x.dtype)
        oracle = Oracle(query, y, target, self.queries, self.batch_queries, snap)
        everyone = torch.arange(len(x), device=x.device)
        with torch.no_grad():
            pred = oracle.predict(everyone, x)  # the clean check: each sample's first query
            clean_adv = pred != y if target is None else pred == target
            x_adv, found = self._start(oracle, x, pred, clean_adv, gen)
            dist = self.threat.distance(x, x_adv).masked_fill(~found, math.inf)
            best, best_dist = x_adv.clone(), dist.clone()
            stop_at = self.eps if math.isfinite(self.eps) else 0.0  # early exit within eps
            for t in range(1, self.steps + 1):
                live = found & (best_dist > stop_at) & (oracle.remaining(everyone) > 0)
                idx = live.nonzero().flatten()
                if idx.numel() == 0:
                    break
                new = self._iterate(oracle, idx, x[idx], x_adv[idx], dist[idx], t, gen)
                x_adv[idx] = new
                dist[idx] = self.threat.distance(x[idx], new)
                better = dist < best_dist
                best = torch.where(rows_view(better, best), x_adv, best)
                best_dist = torch.where(better, dist, best_dist)
        return HopSkipJumpResult(best, oracle.used, best_dist)

    def _start(
        self, oracle: Oracle, x: Tensor, pred: Tensor, clean_adv: Tensor, gen: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Adversarial starting points on the boundary: ``(x_start (B, ...), found (B,))``;
        ``pred`` ``(B,)`` are the clean top-1 labels, ``clean_adv`` already adversarial."""
        lo, hi = self.threat.bounds
        start = x.clone()
        found = clean_adv.clone()
        if oracle.target is not None:  # a batch image the model already puts in the target class
            hit = oracle.target[:, None] == pred[None, :]  # (B, B)
            has = hit.any(dim=1) & ~found
            start[has] = x[hit.float().argmax(dim=1)[has]]
            found |= has
        for _ in range(self.init_trials):
            idx = (~found & (oracle.remaining(torch.arange(len(x), device=x.device)) > 0))
            idx = idx.nonzero().flatten()
            if idx.numel() == 0:
                break
            noise = lo + (hi - lo) * torch.rand(
                (len(idx), *x.shape[1:]), generator=gen, device=x.device, dtype=x.dtype
            )
            adv = oracle.ask(idx, noise)
            start[idx[adv]] = noise[adv]
            found[idx[adv]] = True
        todo = (found & ~clean_adv).nonzero().flatten()
        tol = torch.full((len(todo),), _INIT_TOLERANCE, dtype=x.dtype, device=x.device)
        start[todo] = binary_search(oracle, todo, x[todo], start[todo], "l2", tol)
        d = x[0].numel()
        start[todo] = binary_search(
            oracle, todo, x[todo], start[todo], self.norm, self._threshold(x[todo], start[todo], d)
        )
        return start, found

    def _threshold(self, x0: Tensor, x_adv: Tensor, d: int) -> Tensor:
        """Bisection threshold per row: ``theta`` (l2), ``min(theta * dist, theta)`` (linf)."""
        th = theta(self.norm, d, self.gamma)
        if self.norm == "l2":
            return torch.full((len(x0),), th, dtype=x0.dtype, device=x0.device)
        return (self.threat.distance(x0, x_adv) * th).clamp_max(th)

    def _iterate(
        self,
        oracle: Oracle,
        idx: Tensor,
        x0: Tensor,
        x_adv: Tensor,
        dist: Tensor,
        t: int,
        gen: torch.Generator,
    ) -> Tensor:
        """Iteration ``t`` (1-based) for rows ``idx``: estimate, step, bisect back."""
        lo, hi = self.threat.bounds
        d = x0[0].numel()
        th = theta(self.norm, d, self.gamma)
        if t == 1:
            delta = torch.full_like(dist, 0.1 * (hi - lo))
        else:
            delta = (math.sqrt(d) if self.norm == "l2" else d) * th * dist
        n_t = min(int(self.init_evals * math.sqrt(t)), self.max_evals)
        evals = oracle.remaining(idx).clamp(max=n_t)
        grad = estimate_direction(oracle, idx, x_adv, delta, evals, self.norm, (lo, hi), gen)
        update = grad.sign() if self.norm == "linf" else grad
        moved = geometric_step(oracle, idx, x_adv, update, dist / math.sqrt(t), (lo, hi))
        return binary_search(
            oracle, idx, x0, moved, self.norm, self._threshold(x0, moved, d)
        )

