"""The L2 square pattern of the Square Attack.

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV 2020, Sec. 3.2 (L2): each proposal pastes a square of the pattern
``eta`` (two halves of opposite sign, mass concentrated in the middle of each half) scaled to the
mass it takes over; :class:`advimage.attacks.square.Square` places and scales it.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["eta_pattern", "rect_pattern"]


def eta_pattern(s: int, like: Tensor, transpose: bool) -> Tensor:
    """The l2 square pattern of the paper, (s, s), unit Frobenius norm.

    Two stacked halves of opposite sign; each half weighs pixel (i, j) by
    ``sum_{k >= d} 1 / (k + 1)^2`` with ``d`` its Chebyshev distance to the half's centre, so
    the mass concentrates in the middle of each half.
    """
    top = rect_pattern(s // 2, s, like)
    bottom = rect_pattern(s - s // 2, s, like)
    eta = torch.cat([top, -bottom], dim=0)
    eta = eta / eta.norm().clamp_min(1e-12)
    return eta.t() if transpose else eta


def rect_pattern(a: int, b: int, like: Tensor) -> Tensor:
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
