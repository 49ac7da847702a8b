"""The pieces of HopSkipJump (Chen, Jordan & Wainwright, 2020): a counting label oracle, the
binary search to the decision boundary, the Monte-Carlo gradient-direction estimate and the
geometric step-size search, each batched over samples with a per-sample query budget.

Every function works on a subset of the batch given by row indices ``idx`` ``(b,)`` into the
whole batch, so per-sample labels, targets and query counts live in one :class:`Oracle`.
A row whose budget is spent is never queried again; each phase then stops for that row with
what it has (the binary search keeps its adversarial end, the step search keeps the point).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from advimage.attacks.base import Model
from advimage.attacks.restarts import rows_view
from advimage.threat import l2_norms

__all__ = ["Oracle", "binary_search", "estimate_direction", "geometric_step", "theta"]

# Halvings of the step size before a row gives up an iteration (the reference loops forever;
# after 2^-40 of the distance no step can matter).
_MAX_HALVINGS = 40
# Bisections before giving up on a threshold below the float resolution of the blend.
_MAX_BISECTIONS = 64


class Oracle:
    """Label-only access to ``model`` that counts each sample's queries.

    Args:
        model: The classifier; only its top-1 decision is used.
        y: ``(B,)`` true labels; ``target``: ``(B,)`` target classes or ``None``.
        budget: Queries allowed per sample.
        chunk: Most rows per model call.
        snap: ``snap(idx, points)``: the points as the attack's caller will get them (rounded
            to its low-precision dtype); queries and kept points go through it (``None``:
            points are kept as they are).
    """

    def __init__(
        self,
        model: Model,
        y: Tensor,
        target: Tensor | None,
        budget: int,
        chunk: int,
        snap: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> None:
        self.model, self.y, self.target = model, y, target
        self.budget, self.chunk, self._snap = budget, chunk, snap
        self.used = torch.zeros_like(y)  # (B,) queries spent per sample

    def snap(self, idx: Tensor, points: Tensor) -> Tensor:
        """``points`` ``(n, ...)`` of rows ``idx`` as the caller will receive them."""
        return points if self._snap is None else self._snap(idx, points)

    def remaining(self, idx: Tensor) -> Tensor:
        """``(b,)`` queries left to rows ``idx``."""
        return self.budget - self.used.index_select(0, idx)

    @torch.no_grad()
    def predict(self, idx: Tensor, x_rows: Tensor) -> Tensor:
        """Top-1 labels ``(n,)`` of ``x_rows`` ``(n, ...)``, one query charged to each of the
        rows ``idx`` ``(n,)`` they belong to (repeats allowed)."""
        x_rows = self.snap(idx, x_rows)
        labels = [self.model(xs).argmax(1) for xs in x_rows.split(self.chunk)]
        self.used.index_add_(0, idx, torch.ones_like(idx))
        return torch.cat(labels) if labels else idx.new_zeros(0)

    def ask(self, idx: Tensor, x_rows: Tensor) -> Tensor:
        """Is ``x_rows`` adversarial for rows ``idx``? Boolean ``(n,)``; one query each."""
        pred = self.predict(idx, x_rows)
        if self.target is None:
            return pred != self.y.index_select(0, idx)
        return pred == self.target.index_select(0, idx)


def _blend(x0: Tensor, x1: Tensor, alpha: Tensor, norm: str) -> Tensor:
    """Points between ``x0`` and ``x1``: the segment (l2) or the linf box of radius ``alpha``."""
    a = rows_view(alpha, x0)
    if norm == "l2":
        return (1 - a) * x0 + a * x1
    return torch.minimum(torch.maximum(x1, x0 - a), x0 + a)


def binary_search(
    oracle: Oracle, idx: Tensor, x0: Tensor, x_adv: Tensor, norm: str, threshold: Tensor
) -> Tensor:
    """Bisect between clean ``x0`` and adversarial ``x_adv`` (rows ``idx``) to the boundary.

    l2 bisects the blending weight in [0, 1]; linf bisects the linf radius in
    [0, ||x_adv - x0||_inf] and clips ``x_adv`` to it (Algorithm 1 of the paper; the authors'
    ``binary_search_batch``). A row stops once ``high - low <= threshold`` or its budget is
    spent. Returns the adversarial end ``(b, ...)``.
    """
    if norm == "l2":
        high = torch.ones(len(idx), dtype=x0.dtype, device=x0.device)
    else:
        high = (x_adv - x0).flatten(1).abs().amax(dim=1)
    low = torch.zeros_like(high)
    for _ in range(_MAX_BISECTIONS):
        todo = ((high - low) > threshold) & (oracle.remaining(idx) > 0)
        if not bool(todo.any()):
            break
        rows = todo.nonzero().flatten()
        mid = (low + high).index_select(0, rows) / 2
        adv = oracle.ask(idx[rows], _blend(x0[rows], x_adv[rows], mid, norm))
        high.index_copy_(0, rows, torch.where(adv, mid, high.index_select(0, rows)))
        low.index_copy_(0, rows, torch.where(adv, low.index_select(0, rows), mid))
    return oracle.snap(idx, _blend(x0, x_adv, high, norm))


def estimate_direction(
    oracle: Oracle,
    idx: Tensor,
    x_adv: Tensor,
    delta: Tensor,
    evals: Tensor,
    norm: str,
    bounds: tuple[float, float],
    gen: torch.Generator,
) -> Tensor:
    """Unit-L2 estimate ``(b, ...)`` of the boundary's normal at ``x_adv`` (Section 4 of the
    paper): the mean of random unit directions ``u`` (Gaussian for l2, uniform in [-1, 1]
    for linf) weighted by ``phi(x_adv + delta u) - mean(phi)`` in {-1, +1}, the baseline
    dropped when every probe agrees. Row ``i`` spends ``evals[i]`` queries; probes are drawn
    and asked in chunks of ``oracle.chunk`` rows, the sums kept, so memory stays flat.
    """
    b = len(idx)
    n_max = int(evals.max()) if b else 0
    per = max(oracle.chunk // max(b, 1), 1)  # probes per row per chunk
    s_fu = torch.zeros_like(x_adv)  # sum of phi * u
    s_u = torch.zeros_like(x_adv)  # sum of u
    s_f = torch.zeros(b, dtype=x_adv.dtype, device=x_adv.device)  # sum of phi
    d = rows_view(delta, x_adv)
    ones = [1] * (x_adv.dim() - 1)
    for start in range(0, n_max, per):
        k = min(per, n_max - start)
        shape = (k, *x_adv.shape)
        if norm == "l2":
            u = torch.randn(shape, generator=gen, device=x_adv.device, dtype=x_adv.dtype)
        else:
            u = torch.rand(shape, generator=gen, device=x_adv.device, dtype=x_adv.dtype) * 2 - 1
        u = u / l2_norms(u.flatten(0, 1)).view(k, b, *ones)
        probes = (x_adv + d * u).clamp(*bounds)  # (k, b, ...)
        u = (probes - x_adv) / (d + 1e-8)  # the direction actually probed, after clipping
        valid = (torch.arange(start, start + k, device=x_adv.device)[:, None] < evals)  # (k, b)
        slot, row = valid.nonzero(as_tuple=True)
        phi = torch.zeros(k, b, dtype=x_adv.dtype, device=x_adv.device)
        phi[slot, row] = oracle.ask(idx[row], probes[slot, row]).to(x_adv.dtype) * 2 - 1
        s_fu += (phi.view(k, b, *ones) * u).sum(dim=0)
        s_u += (valid.to(x_adv.dtype).view(k, b, *ones) * u).sum(dim=0)
        s_f += phi.sum(dim=0)
    n = evals.clamp_min(1).to(x_adv.dtype)
    mean_f = s_f / n
    baseline = torch.where(mean_f.abs() == 1, torch.zeros_like(mean_f), mean_f)
    grad = (s_fu - rows_view(baseline, x_adv) * s_u) / rows_view(n, x_adv)
    return grad / rows_view(l2_norms(grad) + 1e-12, grad)


def geometric_step(
    oracle: Oracle,
    idx: Tensor,
    x_adv: Tensor,
    update: Tensor,
    step: Tensor,
    bounds: tuple[float, float],
) -> Tensor:
    """``clip(x_adv + eps * update)`` with the largest ``eps = step / 2^k`` that stays
    adversarial (the paper's geometric progression); rows that find none within their budget
    (or ``_MAX_HALVINGS``) keep ``x_adv``. Returns ``(b, ...)``."""
    eps = step.clone()
    result = x_adv.clone()
    pending = torch.ones(len(idx), dtype=torch.bool, device=x_adv.device)
    for _ in range(_MAX_HALVINGS):
        pending &= oracle.remaining(idx) > 0
        if not bool(pending.any()):
            break
        rows = pending.nonzero().flatten()
        prop = (x_adv[rows] + rows_view(eps[rows], update) * update[rows]).clamp(*bounds)
        prop = oracle.snap(idx[rows], prop)
        adv = oracle.ask(idx[rows], prop)
        result[rows[adv]] = prop[adv]
        pending[rows[adv]] = False
        eps[rows[~adv]] /= 2
    return result


def theta(norm: str, dim: int, gamma: float) -> float:
    """The binary-search threshold of the paper: ``gamma / d^1.5`` (l2), ``gamma / d^2`` (linf)."""
    return gamma / (dim * math.sqrt(dim)) if norm == "l2" else gamma / (dim * dim)
