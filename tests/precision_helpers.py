"""Distances measured three ways, for the float16/bfloat16 threat-model contracts."""

from __future__ import annotations

import torch


def max_distances(x: torch.Tensor, x_adv: torch.Tensor, norm: str) -> list[float]:
    """Largest per-sample L-inf or L2 distance, computed in float64 (exact for these dtypes),
    float32 and ``x``'s own dtype."""
    out = []
    for dt in (torch.float64, torch.float32, x.dtype):
        d = (x_adv.to(dt) - x.to(dt)).flatten(1)
        dist = d.abs().amax(dim=1) if norm == "linf" else torch.linalg.vector_norm(d, dim=1)
        out.append(float(dist.max()))
    return out
