"""FAB's projections onto a hyperplane intersected with the pixel box (linf, l2 and l1).

Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive boundary attack",
ICML 2020, Sec. 3.1. Each FAB step needs, per sample, the smallest perturbation ``d`` in the
norm such that ``t + d`` lies on the linearised decision boundary ``<w, t + d> = b`` and inside
the box. Both problems are solved exactly by sorting the coordinates by the value of the
Lagrange multiplier at which they hit the box and bisecting over that order (O(D log D) per
sample, batched over samples, no Python loop over samples). In L1 the order is the cost of
each coordinate per unit of ``<w, d>`` (``1 / |w_i|``): the cheapest coordinates move to the box
edge in turn, and the one where the plane is reached moves part of the way.

A line-for-line port of ``projection_linf``, ``projection_l2`` and ``projection_l1`` of the
reference code (``fab_projections.py`` of Croce & Hein's auto-attack, MIT licence), for the
box [0, 1]; :func:`project_onto_boundary` maps other pixel boxes onto [0, 1] first (an affine
map that scales every norm by the same factor, so the minimiser maps onto the minimiser).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["project_onto_boundary"]

_BIG = 1e12  # stands for "never hits the box" in the l2 multiplier order
_W_TINY = 1e-8  # coordinates with |w| below this do not move (l2)


def project_onto_boundary(
    norm: str, t: Tensor, w: Tensor, b: Tensor, bounds: tuple[float, float]
) -> Tensor:
    """Smallest ``d`` (in ``norm``) with ``<w, t + d> = b`` and ``t + d`` in the box.

    Args:
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.
        t: Points ``(n, D)`` inside ``bounds``.
        w: Hyperplane normals ``(n, D)``.
        b: Offsets ``(n,)``.
        bounds: Pixel box ``(low, high)``.

    Returns:
        ``d`` ``(n, D)``; where the box does not reach the hyperplane, the box point closest
        to it (as in the reference code).
    """
    lo, hi = bounds
    scale = hi - lo
    # x = lo + scale * x' maps the box onto [0, 1]: <w, x> = b  <=>  <scale w, x'> = b - lo sum(w)
    t01 = (t - lo) / scale
    w01 = w * scale
    b01 = b - lo * w.sum(dim=1)
    if norm == "linf":
        return _projection_linf(t01, w01, b01) * scale
    if norm == "l2":
        return _projection_l2(t01, w01, b01) * scale
    if norm == "l1":
        return _projection_l1(t01, w01, b01) * scale
    raise ValueError(f"FAB projection: unsupported norm {norm!r}; choose one of: linf, l2, l1")


def _bisect(
    values: Callable[[Tensor], Tensor], rhs: Tensor, width: int, ub0: int
) -> Tensor:
    """Per row, the last index ``i`` in ``[0, ub0]`` with ``values(i) > rhs`` found by
    bisection; ``values`` maps a ``(m, 1)`` long index to ``(m,)`` values."""
    lb = torch.zeros(len(rhs), device=rhs.device)
    ub = torch.full_like(lb, float(ub0))
    for _ in range(math.ceil(math.log2(width))):
        mid = torch.floor((lb + ub) / 2)
        c = values(mid.long().unsqueeze(1)) > rhs
        lb = torch.where(c, mid, lb)
        ub = torch.where(c, ub, mid)
    return lb.long()


def _projection_linf(t: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """``projection_linf`` of the reference code (box [0, 1])."""
    w, b = w.clone(), b.clone()
    sign = 2 * ((w * t).sum(1) - b >= 0) - 1
    w.mul_(sign.unsqueeze(1))
    b.mul_(sign)
    a = (w < 0).to(t.dtype)
    d = (a - t) * (w != 0).to(t.dtype)
    p = a - t * (2 * a - 1)
    indp = torch.argsort(p, dim=1)
    b = b - (w * t).sum(1)
    b0 = (w * d).sum(1)
    indp2 = indp.flip((1,))
    ws = w.gather(1, indp2)
    bs2 = -ws * d.gather(1, indp2)
    s = torch.cumsum(ws.abs(), dim=1)
    sb = torch.cumsum(bs2, dim=1) + b0.unsqueeze(1)
    b2 = sb[:, -1] - s[:, -1] * p.gather(1, indp[:, 0:1]).squeeze(1)
    c_l = b - b2 > 0
    c2 = (b - b0 > 0) & (~c_l)
    indp_, sb_, s_, p_, b_ = indp[c2], sb[c2], s[c2], p[c2], b[c2]
    width = w.shape[1]

    def value(k: Tensor) -> Tensor:
        indcurr = indp_.gather(1, width - 1 - k)
        return -(sb_.gather(1, k) - s_.gather(1, k) * p_.gather(1, indcurr)).squeeze(1)

    lb = _bisect(value, -b_, width, width - 1)  # b_ - b2 > 0  <=>  -b2 > -b_
    if c_l.any():
        lmbd = torch.clamp_min((b[c_l] - sb[c_l, -1]) / (-s[c_l, -1]), min=0).unsqueeze(-1)
        d[c_l] = (2 * a[c_l] - 1) * lmbd
    lmbd = torch.clamp_min((b[c2] - sb[c2, lb]) / (-s[c2, lb]), min=0).unsqueeze(-1)
    d[c2] = torch.min(lmbd, d[c2]) * a[c2] + torch.max(-lmbd, d[c2]) * (1 - a[c2])
    return d * (w != 0).to(t.dtype)


def _projection_l2(t: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """``projection_l2`` of the reference code (box [0, 1])."""
    w = w.clone()
    c = (w * t).sum(1) - b
    ind2 = 2 * (c >= 0) - 1
    w.mul_(ind2.unsqueeze(1))
    c = c * ind2
    r = torch.max(t / w, (t - 1) / w).clamp(min=-_BIG, max=_BIG)
    r.masked_fill_(w.abs() < _W_TINY, _BIG)
    r[r == -_BIG] *= -1
    rs, indr = torch.sort(r, dim=1)
    rs2 = F.pad(rs[:, 1:], (0, 1))
    rs.masked_fill_(rs == _BIG, 0)
    rs2.masked_fill_(rs2 == _BIG, 0)
    w3s = (w**2).gather(1, indr)
    w5 = w3s.sum(dim=1, keepdim=True)
    ws = w5 - torch.cumsum(w3s, dim=1)
    d = -(r * w)
    d.mul_((w.abs() > _W_TINY).to(t.dtype))
    s = torch.cat((-w5 * rs[:, 0:1], torch.cumsum((-rs2 + rs) * ws, dim=1) - w5 * rs[:, 0:1]), 1)
    c4 = s[:, 0] + c < 0
    c3 = (d * w).sum(dim=1) + c > 0
    c2 = ~(c4 | c3)
    s_, c_ = s[c2], c[c2]
    width = w.shape[1]
    lb = _bisect(lambda k: s_.gather(1, k).squeeze(1), -c_, width, width - 1)
    if c4.any():
        alpha = c[c4] / w5[c4].squeeze(-1)
        d[c4] = -alpha.unsqueeze(-1) * w[c4]
    if c2.any():
        alpha = (s[c2, lb] + c[c2]) / ws[c2, lb] + rs[c2, lb]
        alpha[ws[c2, lb] == 0] = 0
        c5 = (alpha.unsqueeze(-1) > r[c2]).to(t.dtype)
        d[c2] = d[c2] * c5 - alpha.unsqueeze(-1) * w[c2] * (1 - c5)
    return d * (w.abs() > _W_TINY).to(t.dtype)


def _projection_l1(t: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """``projection_l1`` of the reference code (box [0, 1])."""
    w = w.clone()
    c = (w * t).sum(1) - b
    sign = 2 * (c >= 0) - 1
    w.mul_(sign.unsqueeze(1))
    c = c * sign  # now >= 0: <w, d> must come down by c
    indr = torch.argsort((1 / w).abs().clamp_max(_BIG), dim=1)  # cheapest coordinates first
    rank = torch.argsort(indr, dim=1)
    d = (-t + (w < 0).to(t.dtype)) * (w != 0).to(t.dtype)  # each coordinate's whole way
    ds = torch.min(-w * t, w * (1 - t)).gather(1, indr)  # (<= 0) what each can take off c
    s = torch.cumsum(torch.cat((c.unsqueeze(-1), ds), 1), dim=1)  # (n, D + 1)
    c2 = s[:, -1] < 0  # the box reaches the plane (else: the box corner, d as is)
    s_ = s[c2]
    width = w.shape[1]  # last sum s[:, width] < 0 on these rows: the answer is below width
    lb = _bisect(lambda k: s_.gather(1, k).squeeze(1), torch.zeros_like(s_[:, 0]), width, width + 1)
    if c2.any():
        j = indr[c2].gather(1, lb.unsqueeze(1))  # (m, 1) the coordinate that reaches the plane
        alpha = -s_.gather(1, lb.unsqueeze(1)) / w[c2].gather(1, j)
        full = (rank[c2] < lb.unsqueeze(1)).to(t.dtype)  # coordinates moved all the way
        d[c2] = (d[c2] * full).scatter(1, j, alpha)
    return d * (w.abs() > _W_TINY).to(t.dtype)
