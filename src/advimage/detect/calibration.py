"""Thresholds at a target false-positive rate for detectors that flag large scores.

Used by the noise-signature detector of Hu, Yu et al. (NeurIPS 2019), whose official
``evaluate.py`` flags an image when *any* criterion exceeds its threshold (``score >
threshold``) and measures the FPR on clean images as ``mean(score > threshold)``.

Rules implemented here:

* one criterion: the threshold is the order statistic ``s_(n-m)`` (ascending, 1-based) with
  ``m = floor(fpr * n)``, so at most ``m`` calibration scores lie strictly above it; with ties
  (integer step counts) fewer may, and the achieved rate is reported, never rounded up;
* several criteria, joint calibration: every criterion gets the same per-criterion budget
  ``m_c`` and we take the largest ``m_c <= m`` for which the *union* of flags stays within
  ``m``. Splitting the budget (``m_c = floor(m / k)``, Bonferroni) always satisfies that
  condition, so the joint thresholds are never higher than split ones, while the combined
  FPR on the calibration set is still ``<= fpr``. Without adversarial data at calibration
  time an equal share is the neutral choice (the official ``tune_criterion_thresholds``
  instead searches every triple with TPR on adversarial images, which a deployed detector
  cannot see);
* size: a rate ``fpr`` is meaningful only if at least one calibration image may be flagged,
  so calibration needs ``n >= ceil(1 / fpr)`` images (e.g. 100 for fpr 0.01).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["check_fpr", "joint_thresholds", "min_calibration_size", "threshold_at"]

# Slack (unitless) so fpr * n = 4.999999 from float rounding still allows 5 flags.
_ROUND_TOL = 1e-9


def check_fpr(fpr: object) -> float:
    """``fpr`` as a float in (0, 1); ``ValueError`` otherwise."""
    try:
        value = float(fpr)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"fpr must be a number in (0, 1), got {fpr!r}") from None
    if not 0.0 < value < 1.0:
        raise ValueError(f"fpr must be in (0, 1), got {fpr!r}")
    return value


def min_calibration_size(fpr: float) -> int:
    """Fewest calibration images for which ``fpr`` allows one false positive: ``ceil(1/fpr)``."""
    return math.ceil(1.0 / check_fpr(fpr) - _ROUND_TOL)


def _allowed(fpr: float, n: int) -> int:
    return math.floor(fpr * n + _ROUND_TOL)


def threshold_at(scores: Tensor, max_above: int) -> float:
    """Smallest calibration score with at most ``max_above`` scores strictly above it."""
    s = scores.detach().flatten().double().sort().values  # ascending
    if s.numel() == 0:
        raise ValueError("no calibration scores")
    m = min(max(int(max_above), 0), s.numel() - 1)
    return float(s[s.numel() - 1 - m])


def joint_thresholds(
    scores: dict[str, Tensor], fpr: float
) -> tuple[dict[str, float], float, dict[str, float]]:
    """Per-criterion thresholds whose union flags at most ``floor(fpr * n)`` calibration images.

    Args:
        scores: criterion -> ``(n,)`` scores of clean calibration images (same images, same
            order for every criterion); larger means more suspicious.
        fpr: Target combined false-positive rate in (0, 1).

    Returns:
        ``(thresholds, achieved combined FPR, achieved FPR per criterion)`` on the
        calibration set.
    """
    fpr = check_fpr(fpr)
    if not scores:
        raise ValueError("joint_thresholds needs at least one criterion")
    cols = {k: v.detach().flatten().double().cpu() for k, v in scores.items()}
    sizes = {v.numel() for v in cols.values()}
    if len(sizes) != 1:
        raise ValueError(f"every criterion needs the same number of scores, got {sorted(sizes)}")
    n = sizes.pop()
    need = min_calibration_size(fpr)
    if n < need:
        raise ValueError(
            f"fpr {fpr:g} needs at least {need} calibration images (ceil(1/fpr)), got {n}"
        )
    budget = _allowed(fpr, n)

    def union_at(m: int) -> tuple[dict[str, float], int]:
        thr = {k: threshold_at(v, m) for k, v in cols.items()}
        flagged = torch.zeros(n, dtype=torch.bool)
        for k, v in cols.items():
            flagged |= v > thr[k]
        return thr, int(flagged.sum())

    # the union count grows with m, and m = 0 flags nothing: binary search the largest m
    lo, hi = 0, budget
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if union_at(mid)[1] <= budget:
            lo = mid
        else:
            hi = mid - 1
    thresholds, count = union_at(lo)
    per = {k: float((v > thresholds[k]).double().mean()) for k, v in cols.items()}
    return thresholds, count / n, per
