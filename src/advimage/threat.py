"""Threat models: the one place norms, projections, random starts and distances live.

A threat model is an L_p ball of radius ``eps`` around each clean image, intersected with the
valid pixel box ``bounds`` (Madry et al., 2018, "Towards Deep Learning Models Resistant to
Adversarial Attacks"). Every attack, defense and evaluator asks a :class:`ThreatModel` instead
of re-implementing clamps, so "inside the ball" means the same thing everywhere.

All per-sample reductions flatten to ``(B, -1)``; nothing loops over samples in Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = ["NORMS", "ThreatModel"]

NORMS: tuple[str, ...] = ("linf", "l2")

# Floor for gradient norms before dividing (unitless); keeps zero gradients at zero, never NaN.
_TINY = 1e-12


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """Reshape per-sample values ``(B,)`` to broadcast against ``like`` ``(B, ...)``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


@dataclass(frozen=True)
class ThreatModel:
    """An ``eps``-ball in the ``norm`` around each input, clipped to the pixel box ``bounds``.

    Args:
        norm: ``"linf"`` or ``"l2"``.
        eps: Radius of the ball in pixel units of ``bounds`` (e.g. ``8/255`` for images in
            [0, 1]); must be positive, may be ``inf`` (then only ``bounds`` constrain).
        bounds: ``(low, high)`` valid pixel range.
    """

    norm: Literal["linf", "l2"]
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
        try:
            lo, hi = (float(b) for b in self.bounds)
        except (TypeError, ValueError):
            raise ValueError(f"bounds must be a pair (low, high), got {self.bounds!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"bounds must be finite with low < high, got {self.bounds!r}")
        object.__setattr__(self, "eps", eps)
        object.__setattr__(self, "bounds", (lo, hi))

    # ------------------------------------------------------------------ distances
    def _norm(self, v: Tensor) -> Tensor:
        """Per-sample norm of ``v`` ``(B, ...)`` -> ``(B,)``."""
        order = math.inf if self.norm == "linf" else 2.0
        return torch.linalg.vector_norm(v.flatten(1), ord=order, dim=1)

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
        """
        delta = x_adv - x  # (B, ...)
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
        return self.clamp(x + delta)

    def random_start(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A random point of the threat model around ``x`` (already projected).

        linf: uniform in the cube. l2: uniform in the ball (Gaussian direction, radius
        ``eps * u ** (1/d)``). With ``eps = inf`` the start is uniform in ``bounds``.
        """
        lo, hi = self.bounds
        if not math.isfinite(self.eps):
            u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            return lo + (hi - lo) * u
        if self.norm == "linf":
            u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            delta = (2.0 * u - 1.0) * self.eps  # (B, ...) uniform in [-eps, eps]
        else:
            g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            direction = g / _per_sample(self._norm(g).clamp_min(_TINY), g)  # unit rows
            d = x[0].numel()
            u = torch.rand((x.shape[0],), generator=generator, device=x.device, dtype=x.dtype)
            radius = self.eps * u.pow(1.0 / d)  # (B,) radial law of the uniform ball
            delta = direction * _per_sample(radius, direction)
        return self.project(x, x + delta)

    # ------------------------------------------------------------------ steps
    def direction(self, grad: Tensor) -> Tensor:
        """Steepest-ascent unit step for ``grad`` under the norm: sign (linf), grad/||grad|| (l2).

        Rows whose gradient is zero map to zero (never NaN).
        """
        if self.norm == "linf":
            return grad.sign()
        return grad / _per_sample(self._norm(grad).clamp_min(_TINY), grad)
