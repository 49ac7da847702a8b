"""Per-sample L_p norms and exact projections onto L_p balls intersected with the pixel box.

The arithmetic behind :class:`advimage.threat.ThreatModel` for all four norms, with a radius per
sample (minimal-norm attacks such as FMN, Pintor et al., NeurIPS 2021, move each sample's ball
on its own). Every function works on a batch ``(B, ...)`` without Python loops over samples.

* L1: the exact Euclidean projection onto ``{d : ||d||_1 <= eps, lo <= x + d <= hi}``, by
  sorting the breakpoints of the piecewise-linear dual function (the box-constrained variant
  of Duchi et al., ICML 2008, used by Croce & Hein, ICCV 2021, "Mind the box: l1-APGD").
* L0: counts *pixels* (spatial positions of ``(B, C, H, W)`` images whose value changed in
  any channel), as Sparse-RS (Croce et al., AAAI 2022) does; Foolbox's FMN-L0 counts single
  features instead (the same on one-channel images). The projection keeps the ``k`` pixels
  whose kept (box-clipped) change removes the most squared distance: the exact Euclidean
  projection onto "at most k changed pixels" intersected with the box.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "l1_steepest", "l2_apgd", "largest_distance", "lp_norms", "pixel_changes", "project_l0",
    "project_l1_box", "random_delta", "random_pixels", "round_towards", "rows",
    "surface_delta", "unit_l2_apgd",
]

# Floor for norms before dividing (unitless); zero rows stay zero, never NaN.
_TINY = 1e-12


def rows(values: Tensor, like: Tensor) -> Tensor:
    """Per-sample values ``(B,)`` shaped to broadcast against ``like`` ``(B, ...)``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def pixel_changes(delta: Tensor) -> Tensor:
    """Per pixel, the squared change summed over channels: ``(B, H, W)`` for 4-D ``delta``;
    other shapes count single features (``(B, n)``)."""
    if delta.dim() == 4:
        return delta.square().sum(dim=1)
    return delta.flatten(1).square()


def lp_norms(delta: Tensor, norm: str) -> Tensor:
    """Per-sample ``norm`` of ``delta`` ``(B, ...)`` -> ``(B,)``; ``l0`` counts changed pixels."""
    flat = delta.flatten(1)
    if norm == "linf":
        return torch.linalg.vector_norm(flat, ord=math.inf, dim=1)
    if norm == "l2":
        return torch.linalg.vector_norm(flat, ord=2, dim=1)
    if norm == "l1":
        return flat.abs().sum(dim=1)
    if norm == "l0":
        return (pixel_changes(delta).flatten(1) > 0).sum(dim=1).to(delta.dtype)
    raise ValueError(f"unknown norm {norm!r}; choose one of: linf, l2, l1, l0")


def largest_distance(norm: str, shape: tuple[int, ...], bounds: tuple[float, float]
                     ) -> tuple[float, str]:
    """The largest ``norm`` distance between two images of ``shape`` ``(C, H, W)`` (or any
    per-sample shape) inside ``bounds``, and what it is, for error messages: the box diagonal
    ``(hi - lo) * sqrt(C H W)`` (l2), every value moved across the box ``(hi - lo) C H W``
    (l1), the pixel count ``H W`` (l0), the box width (linf)."""
    lo, hi = bounds
    n = math.prod(shape)
    shape_text = "x".join(str(s) for s in shape)
    if norm == "l0":
        pixels = n // shape[0] if len(shape) == 3 else n  # a pixel is one (h, w) position
        return float(pixels), (f"the number of pixels of images of shape {shape_text}; an l0 "
                               "budget counts changed pixels")
    size, what = {"l2": ((hi - lo) * math.sqrt(n), "the diagonal sqrt(C*H*W)"),
                  "l1": ((hi - lo) * n, "every value moved across the box"),
                  "linf": (hi - lo, "the whole box")}[norm]
    return size, (f"the largest {norm.upper()} distance between images of shape {shape_text} "
                  f"in [{lo:g}, {hi:g}] ({what}); eps is in pixel units of those images")


def _room(delta: Tensor, x: Tensor, bounds: tuple[float, float]) -> Tensor:
    """How far each coordinate may move in the direction of ``delta`` inside the box (>= 0)."""
    lo, hi = bounds
    return torch.where(delta >= 0, hi - x, x - lo).clamp_min(0)


def project_l1_box(delta: Tensor, x: Tensor, eps: Tensor, bounds: tuple[float, float]) -> Tensor:
    """Exact projection of ``delta`` onto ``{d : ||d||_1 <= eps, lo <= x + d <= hi}``.

    The solution is ``d_i = sign(v_i) * clamp(|v_i| - lam, 0, u_i)`` with ``u_i`` the room to
    the box in the direction of ``v_i`` and ``lam >= 0`` the root of
    ``g(lam) = sum_i clamp(|v_i| - lam, 0, u_i) = eps`` (``lam = 0`` when the box-clipped
    ``v`` already fits). ``g`` is piecewise linear with breakpoints ``|v_i|`` (slope +1 from
    there on, going down in ``lam``) and ``|v_i| - u_i`` (slope -1); the breakpoints are sorted
    once per row and ``g`` is evaluated at all of them by cumulative sums, so the root is exact
    up to rounding and the cost is one sort of ``2n`` values per row.

    Args:
        delta: Perturbations ``(B, ...)``.
        x: Clean images ``(B, ...)`` inside ``bounds``.
        eps: Radii ``(B,)`` (``inf`` allowed: then only the box constrains).
        bounds: Pixel box ``(lo, hi)``.

    Returns:
        The projected perturbations, same shape and dtype as ``delta``.
    """
    v = delta.flatten(1)
    a = v.abs()
    u = _room(v, x.flatten(1), bounds)
    clipped = torch.minimum(a, u)  # the box projection, in magnitudes
    eps = eps.to(v.dtype).reshape(-1)
    over = clipped.sum(dim=1) > eps  # (B,) rows that need lam > 0
    mags = clipped
    if bool(over.any()):
        br = torch.cat([a, a - u], dim=1)  # (B, 2n) breakpoints
        w = torch.cat([torch.ones_like(a), -torch.ones_like(a)], dim=1)
        br, order = br.sort(dim=1, descending=True)
        slope = w.gather(1, order).cumsum(dim=1)  # slope of g just below each breakpoint
        gaps = torch.cat([br[:, :-1] - br[:, 1:], torch.zeros_like(br[:, :1])], dim=1)
        g_next = (slope * gaps).cumsum(dim=1)  # g at the next breakpoint
        g_at = g_next - slope * gaps  # g at each breakpoint (g = 0 at the largest)
        e = torch.where(torch.isfinite(eps), eps, torch.zeros_like(eps)).unsqueeze(1)
        j = (g_at < e).sum(dim=1, keepdim=True).sub(1).clamp(0, br.shape[1] - 1)  # (B, 1)
        lam = br.gather(1, j) - (e - g_at.gather(1, j)) / slope.gather(1, j).clamp_min(1)
        shrunk = (a - lam.clamp_min(0)).clamp_min(0)
        mags = torch.where(over.unsqueeze(1), torch.minimum(shrunk, u), clipped)
    return (v.sign() * mags).view_as(delta)


def project_l0(delta: Tensor, x: Tensor, k: Tensor, bounds: tuple[float, float]) -> Tensor:
    """Exact projection of ``delta`` onto "at most ``k`` changed pixels" inside the box.

    Each pixel's change is first clipped to the box; a kept pixel then costs the squared
    distance the clipping removed, a dropped one its whole squared change, so the ``k``
    pixels with the largest difference of the two are kept (ties broken by position).

    Args:
        delta: Perturbations ``(B, C, H, W)`` (other shapes: per feature).
        x: Clean images inside ``bounds``.
        k: Budgets ``(B,)``, whole numbers (``inf``: keep every pixel).
        bounds: Pixel box ``(lo, hi)``.
    """
    lo, hi = bounds
    clipped = (x + delta).clamp(lo, hi) - x
    gain = pixel_changes(delta) - pixel_changes(delta - clipped)  # (B, H, W) or (B, n)
    flat = gain.flatten(1)
    n = flat.shape[1]
    kk = torch.where(torch.isfinite(k), k, torch.full_like(k, n)).clamp(0, n).long().reshape(-1)
    rank = flat.argsort(dim=1, descending=True, stable=True).argsort(dim=1)
    keep = (rank < kk.unsqueeze(1)).view_as(gain)
    if delta.dim() == 4:
        keep = keep.unsqueeze(1)
    else:
        keep = keep.view_as(delta)
    return torch.where(keep, clipped, torch.zeros_like(clipped))


def random_delta(x: Tensor, norm: str, eps: float, generator: torch.Generator | None) -> Tensor:
    """A random perturbation uniform in the ``norm`` ball of radius ``eps`` (linf, l2, l1),
    not yet clipped to the box.

    linf: uniform in the cube; l2 and l1: a Gaussian (l2) or Laplace (l1) direction scaled to
    the unit sphere of the norm, at radius ``eps * u ** (1/d)`` (the radial law of the uniform
    ball; Calafiore et al., 1998, for the l1 case).
    """
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (2.0 * u - 1.0) * eps  # (B, ...) uniform in [-eps, eps]
    g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if norm == "l1":
        e = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        g = g.sign() * -torch.log1p(-e)  # Laplace(0, 1)
    direction = g / rows(lp_norms(g, norm).clamp_min(_TINY), g)  # unit rows
    d = x[0].numel()
    u = torch.rand((x.shape[0],), generator=generator, device=x.device, dtype=x.dtype)
    radius = eps * u.pow(1.0 / d)  # (B,)
    return direction * rows(radius, direction)


def surface_delta(x: Tensor, norm: str, eps: float, generator: torch.Generator | None) -> Tensor:
    """APGD's random perturbation in Croce & Hein's reference code (linf, l2): a uniform draw in
    [-1, 1] (linf) or a Gaussian one (l2), ``t``, scaled to norm ``eps`` as
    ``eps * t / (||t|| + 1e-12)``, in the code's order of operations (same draws, same bits)."""
    if norm == "linf":
        t = 2 * torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) - 1
        return eps * (t / (rows(lp_norms(t, "linf"), t) + 1e-12))
    if norm == "l2":
        t = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return eps * unit_l2_apgd(t)
    raise ValueError(f"surface_delta is for linf and l2, got {norm!r}")


def l2_apgd(v: Tensor) -> Tensor:
    """Per-sample L2 norms ``(B,)`` summed as APGD's reference code sums them (same bits)."""
    return (v ** 2).view(v.shape[0], -1).sum(-1).sqrt()


def unit_l2_apgd(v: Tensor) -> Tensor:
    """``v / (||v||_2 + 1e-12)`` per sample, APGD's reference ``normalize`` (same bits)."""
    return v / (rows(l2_apgd(v), v) + 1e-12)


def random_pixels(
    x: Tensor, k: float, bounds: tuple[float, float], generator: torch.Generator | None
) -> Tensor:
    """``x`` with ``k`` pixels drawn uniformly per sample (all channels of each) set to
    uniform values of the box (the random start of an l0 attack)."""
    lo, hi = bounds
    pix = x[:, :1] if x.dim() == 4 else x
    score = torch.rand(pix.shape, generator=generator, device=x.device, dtype=x.dtype)
    rank = score.flatten(1).argsort(dim=1).argsort(dim=1).view_as(pix)
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.where(rank < k, lo + (hi - lo) * u, x)


def l1_steepest(grad: Tensor) -> Tensor:
    """The steepest-ascent unit-L1 step for ``grad``: all of it on the coordinate(s) of
    largest ``|grad|`` (ties share it); zero rows stay zero."""
    a = grad.abs().flatten(1)
    top = (a == a.amax(dim=1, keepdim=True)) & (a > 0)
    step = grad.sign().flatten(1) * top
    return (step / top.sum(dim=1, keepdim=True).clamp_min(1)).view_as(grad)


def round_towards(p: Tensor, x: Tensor) -> Tensor:
    """``p`` (float32) in ``x.dtype``, rounded towards ``x``: ``|q - x| <= |p - x|`` per element.

    Rounding to nearest may step past ``p``, away from ``x``; then the neighbour towards ``x``
    lies between ``x`` and ``p`` (``x`` itself is representable, so it is never passed).
    """
    q = p.to(x.dtype)
    qf, xf = q.float(), x.float()  # exact: float32 holds every float16/bfloat16 value
    past = ((p >= xf) & (qf > p)) | ((p <= xf) & (qf < p))
    return torch.where(past, torch.nextafter(q, x), q)
