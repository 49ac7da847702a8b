"""Threat models: the one place norms, projections, random starts and distances live.

A threat model is an L_p ball of radius ``eps`` around each clean image, intersected with the
valid pixel box ``bounds`` (Madry et al., 2018, "Towards Deep Learning Models Resistant to
Adversarial Attacks"). Every attack, defense and evaluator asks a :class:`ThreatModel` instead
of re-implementing clamps, so "inside the ball" means the same thing everywhere.

All per-sample reductions flatten to ``(B, -1)``; nothing loops over samples in Python.

Low-precision images (float16, bfloat16) are projected in float32 and rounded to their dtype
last, towards the clean image, with a final check that the rounded result is still inside the
ball and the box however its distance is measured (see :meth:`ThreatModel.project`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from advimage import lp_balls
from advimage.errors import UserInputError

__all__ = ["NORMS", "ThreatModel", "is_low_precision", "l2_norms", "orthogonal_part", "unit_l2"]

NORMS: tuple[str, ...] = ("linf", "l2", "l1", "l0")

# Floor for gradient norms before dividing (unitless); keeps zero gradients at zero, never NaN.
_TINY = 1e-12
# Rounds of shrinking a low-precision result that rounding pushed out of the ball before
# falling back to the clean image (one round suffices in practice; the fallback is a guarantee).
_FIT_ROUNDS = 4


def is_low_precision(dtype: torch.dtype) -> bool:
    """True for floating dtypes narrower than float32 (float16, bfloat16, float8 ...)."""
    return dtype.is_floating_point and torch.finfo(dtype).bits < 32


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """Reshape per-sample values ``(B,)`` to broadcast against ``like`` ``(B, ...)``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def l2_norms(v: Tensor) -> Tensor:
    """Per-sample L2 norms of ``v`` ``(B, ...)`` -> ``(B,)`` (whatever the threat's norm)."""
    return torch.linalg.vector_norm(v.flatten(1), ord=2, dim=1)


def unit_l2(v: Tensor) -> Tensor:
    """``v`` with each row scaled to unit L2 norm; zero rows stay zero (never NaN)."""
    return v / _per_sample(l2_norms(v).clamp_min(_TINY), v)


def orthogonal_part(g: Tensor, h: Tensor) -> Tensor:
    """Per sample, ``g`` minus its component along ``h`` (both ``(B, ...)``).

    The update direction of orthogonal projected gradient descent (Bryniarski et al., 2022,
    "Evading Adversarial Example Detection Defenses with Orthogonal Projected Gradient
    Descent"): a step along it leaves the objective of ``h`` unchanged to first order.
    """
    hu = unit_l2(h)
    dot = (g * hu).flatten(1).sum(dim=1)  # (B,)
    return g - _per_sample(dot, g) * hu


@dataclass(frozen=True)
class ThreatModel:
    """An ``eps``-ball in the ``norm`` around each input, clipped to the pixel box ``bounds``.

    Args:
        norm: ``"linf"``, ``"l2"``, ``"l1"`` or ``"l0"`` (changed pixels, see
            :mod:`advimage.lp_balls`).
        eps: Radius of the ball in pixel units of ``bounds`` (e.g. ``8/255`` for images in
            [0, 1]; a whole number of pixels for l0); must be positive, may be ``inf`` (then
            only ``bounds`` constrain).
        bounds: ``(low, high)`` valid pixel range.
    """

    norm: Literal["linf", "l2", "l1", "l0"]
    eps: float
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; choose one of: {', '.join(NORMS)}")
        try:
            eps = float(self.eps)
        except (TypeError, ValueError):
            raise ValueError(f"eps must be a number, got {self.eps!r}") from None
        if math.isnan(eps) or eps <= 0:
            raise ValueError(f"eps must be > 0 (inf allowed), got {self.eps!r}")
        if self.norm == "l0" and math.isfinite(eps) and eps != int(eps):
            raise ValueError(f"an l0 budget counts pixels: eps must be a whole number, got {eps:g}")
        try:
            lo, hi = (float(b) for b in self.bounds)
        except (TypeError, ValueError):
            raise ValueError(f"bounds must be a pair (low, high), got {self.bounds!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"bounds must be finite with low < high, got {self.bounds!r}")
        if self.norm == "linf" and math.isfinite(eps) and eps > hi - lo:
            raise UserInputError(
                f"eps={eps:g} is larger than the whole pixel range [{lo:g}, {hi:g}] for linf; "
                f"eps is in pixel units of images in [{lo:g}, {hi:g}], e.g. 8/255"
            )
        object.__setattr__(self, "eps", eps)
        object.__setattr__(self, "bounds", (lo, hi))

    def check_budget(self, x: Tensor) -> None:
        """Refuse a budget beyond the largest distance between images of ``x``'s shape in
        ``bounds`` (:func:`advimage.lp_balls.largest_distance`: the box diagonal in L2, the
        whole box in L1, the pixel count in L0); a larger budget means the caller mistook the
        units (linf budgets are checked at construction).

        Raises:
            UserInputError: in one line, naming the image shape and the largest useful eps.
        """
        if self.norm == "linf" or not math.isfinite(self.eps) or x.dim() < 2:
            return
        largest, what = lp_balls.largest_distance(self.norm, tuple(x.shape[1:]), self.bounds)
        if self.eps > largest:
            raise UserInputError(f"eps={self.eps:g} is larger than {largest:.4g}, {what}")

    # ------------------------------------------------------------------ distances
    def _norm(self, v: Tensor) -> Tensor:
        """Per-sample norm of ``v`` ``(B, ...)`` -> ``(B,)``."""
        return lp_balls.lp_norms(v, self.norm)

    def distance(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """Per-sample ``norm`` distance between ``x`` and ``x_adv``, shape ``(B,)``."""
        return self._norm(x_adv - x)

    def contains(self, x: Tensor, x_adv: Tensor, atol: float = 1e-6) -> Tensor:
        """Boolean ``(B,)``: ``x_adv`` lies in the eps-ball around ``x`` and inside ``bounds``."""
        lo, hi = self.bounds
        in_ball = self.distance(x, x_adv) <= self.eps + atol
        flat = x_adv.flatten(1)
        in_box = (flat >= lo - atol).all(dim=1) & (flat <= hi + atol).all(dim=1)
        return in_ball & in_box

    # ------------------------------------------------------------------ projection
    def clamp(self, x_adv: Tensor) -> Tensor:
        """Clip to the pixel box ``bounds``."""
        lo, hi = self.bounds
        return x_adv.clamp(lo, hi)

    def project(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """Project ``x_adv`` into the eps-ball around ``x``, then clip to ``bounds``.

        Clipping after the ball projection never leaves the ball: ``x`` is inside the box,
        so clipping only moves each coordinate of ``x_adv`` towards ``x``.

        For a low-precision ``x`` (float16, bfloat16) the projection runs in float32 and the
        result is rounded to ``x.dtype`` towards ``x``, then checked: its distance to ``x``,
        computed exactly, in float32 and in ``x.dtype``, is at most ``eps`` and it lies in
        ``bounds`` (rounding to nearest would overshoot the ball by up to half a unit in the
        last place, 1.2e-4 at 8/255 in float16). ``x_adv`` may then be float32.
        """
        if is_low_precision(x.dtype):
            return self._fit(x, self._project(x.float(), x_adv.float()))
        return self._project(x, x_adv)

    def _project(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """:meth:`project` in the promoted dtype of ``x`` and ``x_adv``."""
        if self.norm in ("l1", "l0"):  # exact projections onto the ball intersected with the box
            eps = torch.full((len(x),), self.eps, dtype=x.dtype, device=x.device)
            proj = lp_balls.project_l1_box if self.norm == "l1" else lp_balls.project_l0
            return self.clamp(x + proj(x_adv - x, x, eps, self.bounds))
        return self.clamp(x + self._into_ball(x_adv - x))

    def _into_ball(self, delta: Tensor) -> Tensor:
        """Perturbations ``delta`` ``(B, ...)`` shrunk into the eps-ball (rows inside unchanged)."""
        if math.isfinite(self.eps):
            if self.norm == "linf":
                delta = delta.clamp(-self.eps, self.eps)
            else:
                norms = self._norm(delta)  # (B,)
                # scale only rows outside the ball, so projecting twice changes nothing
                factor = torch.where(
                    norms > self.eps, self.eps / norms.clamp_min(_TINY), torch.ones_like(norms)
                )
                delta = delta * _per_sample(factor, delta)
        return delta

    def project_box_first(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """Clip ``x_adv`` to ``bounds``, then project it into the eps-ball around ``x``.

        The order of some reference implementations (the official attacks of Hu, Yu et al.,
        NeurIPS 2019: ``(clip(w) - x).clamp(-eps, eps) + x``), kept where results must match
        them bit for bit. Mathematically inside both ball and box like :meth:`project`, but the
        final addition may round past ``bounds`` by an ulp; use :meth:`project` for anything
        returned to a caller.
        """
        if self.norm in ("l1", "l0"):
            return self._project(x, self.clamp(x_adv))
        return x + self._into_ball(self.clamp(x_adv) - x)

    def project_apgd(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """:meth:`project` in the order of Croce & Hein's AutoAttack code (APGD, Square), to match
        it bit for bit: linf ``min(max(x_adv, x - eps), x + eps)``, l2 ``x + d / (||d|| +
        1e-12) * min(eps, ||d||)``, then the box (l1, l0, low precision, ``eps = inf``:
        :meth:`project`). In the ball up to one rounding."""
        if self.norm not in ("linf", "l2") or is_low_precision(x.dtype) or \
                not math.isfinite(self.eps):
            return self.project(x, x_adv)
        if self.norm == "linf":
            return self.clamp(torch.min(torch.max(x_adv, x - self.eps), x + self.eps))
        d = x_adv - x
        n = _per_sample(lp_balls.l2_apgd(d), d)  # (B, 1, ...)
        return self.clamp(x + lp_balls.unit_l2_apgd(d) * n.clamp_max(self.eps))

    def random_start(
        self, x: Tensor, generator: torch.Generator | None = None, surface: bool = False
    ) -> Tensor:
        """A random point of the threat model around ``x`` (already projected).

        linf: uniform in the cube. l2, l1: uniform in the ball (Gaussian or Laplace direction,
        radius ``eps * u ** (1/d)``). l0: ``eps`` random pixels set to uniform box values.
        With ``eps = inf`` the start is uniform in ``bounds``. ``surface`` (linf, l2): APGD's
        start in its reference code, at distance eps (:func:`advimage.lp_balls.surface_delta`),
        clipped to the box (in the ball up to one rounding).
        """
        if is_low_precision(x.dtype):
            return self.project(x, self.random_start(x.float(), generator, surface))
        if surface and self.norm in ("linf", "l2") and math.isfinite(self.eps):
            return self.clamp(x + lp_balls.surface_delta(x, self.norm, self.eps, generator))
        lo, hi = self.bounds
        if not math.isfinite(self.eps):
            u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            return lo + (hi - lo) * u
        if self.norm == "l0":
            return lp_balls.random_pixels(x, self.eps, self.bounds, generator)
        return self.project(x, x + lp_balls.random_delta(x, self.norm, self.eps, generator))

    # ------------------------------------------------------------------ steps
    def direction(self, grad: Tensor, apgd: bool = False) -> Tensor:
        """Steepest-ascent unit step for ``grad`` under the norm: sign (linf), grad/||grad|| (l2
        and l0, whose projection makes the step sparse; ``apgd``: ``grad / (||grad|| + 1e-12)``
        as APGD's reference code computes it), the unit vector on the largest ``|grad|``
        coordinate (l1; ties share the step). Zero rows map to zero (never NaN); low-precision
        gradients are normalized in float32.
        """
        if is_low_precision(grad.dtype):
            return self.direction(grad.float(), apgd).to(grad.dtype)
        if self.norm == "linf":
            return grad.sign()
        if self.norm == "l1":
            return lp_balls.l1_steepest(grad)
        return lp_balls.unit_l2_apgd(grad) if apgd else unit_l2(grad)

    # ------------------------------------------------------------------ low precision
    def _fit(self, x: Tensor, p: Tensor) -> Tensor:
        """Round the float32 projection ``p`` to ``x.dtype`` so that it stays in the threat model.

        Rounds towards ``x`` and clips to the representable box; where a distance still exceeds
        eps (float32 rounding in ``p``, or rounding of the distance itself in ``x.dtype``), the
        offending element (linf) or row (l2) of ``p - x`` is shrunk by a few units in the last
        place of ``x.dtype`` and rounded again; after ``_FIT_ROUNDS`` it falls back to ``x``.
        """
        box = self._representable_box(x.dtype)
        xf = x.float()
        q = lp_balls.round_towards(p, x).clamp(*box)
        for k in range(_FIT_ROUNDS):
            bad = self._outside(x, q)  # broadcasts against x
            if not bool(bad.any()):
                return q
            shrink = 1.0 - 2.0 ** (k - 1) * torch.finfo(x.dtype).eps  # from unit roundoff up
            p = torch.where(bad, xf + (p - xf) * shrink, p)
            q = lp_balls.round_towards(p, x).clamp(*box)
        return torch.where(self._outside(x, q), x.clamp(*box), q)

    def _outside(self, x: Tensor, q: Tensor) -> Tensor:
        """Where ``q`` (``x.dtype``) leaves the eps-ball: per element (linf) or per row (l2),
        with the distance computed exactly (float64 where the device has it), in float32 and in
        ``x.dtype``, as a caller might check it."""
        if not math.isfinite(self.eps):
            return torch.zeros((), dtype=torch.bool, device=x.device)
        wide = torch.float32 if x.device.type == "mps" else torch.float64
        bad = torch.zeros((), dtype=torch.bool, device=x.device)
        for dt in (wide, torch.float32, x.dtype):
            delta = q.to(dt) - x.to(dt)
            if self.norm == "linf":
                dist = delta.abs()
            else:
                dist = _per_sample(self._norm(delta), delta)
            bad = bad | (dist.to(wide) > self.eps)
        return bad

    def _representable_box(self, dtype: torch.dtype) -> tuple[float, float]:
        """``bounds`` rounded inwards to values representable in ``dtype``."""
        lo, hi = (torch.tensor(b, dtype=torch.float64).to(dtype) for b in self.bounds)
        if float(lo) < self.bounds[0]:
            lo = torch.nextafter(lo, torch.tensor(math.inf, dtype=dtype))
        if float(hi) > self.bounds[1]:
            hi = torch.nextafter(hi, torch.tensor(-math.inf, dtype=dtype))
        return float(lo), float(hi)
