"""Detection metrics of the noise-signature detector (Hu, Yu et al., NeurIPS 2019).

"A New Defense Against Adversarial Images: Turning a Weakness into a Strength" reports, per
attack, the share of *successful* adversarial images that are flagged at a fixed false-positive
rate, and ROC curves. This module computes exactly that from criterion scores, model-agnostically
(the resumable run that produces the scores is :mod:`advimage.eval.detection`):

* thresholds come from held-out clean *calibration* images (never the evaluation images): one
  criterion alone uses :func:`~advimage.detect.calibration.threshold_at`, the combined detector
  the joint rule of :func:`~advimage.detect.calibration.joint_thresholds`;
* the detection rate at FPR f is the fraction of successful adversarial images (clean image
  correctly classified, adversarial one misclassified) flagged; the FPR actually reached on the
  clean *evaluation* images is reported beside it;
* ROC/AUC per criterion compare clean evaluation images with successful adversarial ones; the
  combined score is ``max_k F_k(s_k)``, ``F_k`` the empirical CDF of criterion k on the
  calibration set, which ranks images the way the equal-budget joint rule thresholds them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor

from advimage.detect.calibration import check_fpr, joint_thresholds, threshold_at

__all__ = [
    "DEFAULT_FPRS",
    "combined_score",
    "detection_rates",
    "roc_aucs",
    "roc_curves",
    "summarize",
]

DEFAULT_FPRS: tuple[float, ...] = (0.05, 0.10, 0.20)  # the paper's operating points


def combined_score(calib: Mapping[str, Tensor], scores: Mapping[str, Tensor]) -> Tensor:
    """``max_k F_k(s_k)`` ``(B,)``: ``F_k`` = share of calibration scores of k strictly below."""
    out = None
    for k, ref in calib.items():
        ref_sorted = ref.detach().double().flatten().sort().values.cpu()
        s = scores[k].detach().double().flatten().cpu()
        below = torch.searchsorted(ref_sorted, s, right=False).double() / ref_sorted.numel()
        out = below if out is None else torch.maximum(out, below)
    if out is None:
        raise ValueError("combined_score needs at least one criterion")
    return out


def detection_rates(
    calib: Mapping[str, Tensor],
    clean: Mapping[str, Tensor],
    adv: Mapping[str, Tensor],
    fprs: Sequence[float] = DEFAULT_FPRS,
) -> list[dict[str, Any]]:
    """Detection rate and clean FPR per target FPR and criterion (plus ``combined``).

    Args:
        calib: criterion -> ``(n,)`` scores of correctly classified clean calibration images.
        clean: criterion -> ``(m,)`` scores of correctly classified clean evaluation images.
        adv: criterion -> ``(a,)`` scores of the successful adversarial images.
        fprs: Target false-positive rates in (0, 1).

    Returns:
        One row per (fpr, criterion): ``fpr_target``, ``criterion``, ``threshold`` (a dict for
        combined), ``fpr_calibration``, ``fpr_test`` (clean evaluation images flagged),
        ``detection_rate`` (adversarials flagged) and ``n_adv``.
    """
    keys = list(calib)
    if not keys:
        raise ValueError("detection_rates needs at least one criterion")
    n = calib[keys[0]].numel()
    rows: list[dict[str, Any]] = []
    for fpr in fprs:
        fpr = check_fpr(fpr)
        m = math.floor(fpr * n + 1e-9)
        for k in keys:
            thr = threshold_at(calib[k], m)
            rows.append(_row(fpr, k, thr, {k: thr}, calib, clean, adv))
        thresholds, _, _ = joint_thresholds(dict(calib), fpr)
        rows.append(_row(fpr, "combined", thresholds, thresholds, calib, clean, adv))
    return rows


def _flagged(scores: Mapping[str, Tensor], thresholds: Mapping[str, float]) -> Tensor:
    first = next(iter(thresholds))
    out = torch.zeros(scores[first].numel(), dtype=torch.bool)
    for k, t in thresholds.items():
        out |= scores[k].detach().double().flatten().cpu() > t
    return out


def _rate(scores: Mapping[str, Tensor], thresholds: Mapping[str, float]) -> float:
    f = _flagged(scores, thresholds)
    return float(f.double().mean()) if f.numel() else float("nan")


def _row(fpr: float, name: str, thr: Any, thresholds: Mapping[str, float],
         calib: Mapping[str, Tensor], clean: Mapping[str, Tensor],
         adv: Mapping[str, Tensor]) -> dict[str, Any]:
    return {
        "fpr_target": fpr,
        "criterion": name,
        "threshold": thr,
        "fpr_calibration": _rate(calib, thresholds),
        "fpr_test": _rate(clean, thresholds),
        "detection_rate": _rate(adv, thresholds),
        "n_adv": int(next(iter(adv.values())).numel()),
    }


def roc_aucs(calib: Mapping[str, Tensor], clean: Mapping[str, Tensor],
             adv: Mapping[str, Tensor]) -> dict[str, float]:
    """AUC per criterion and ``combined`` (clean = 0, adversarial = 1; NaN if a side is empty)."""
    out: dict[str, float] = {}
    curves = roc_curves(calib, clean, adv)
    for name, (c, a) in curves.items():
        if len(c) == 0 or len(a) == 0:
            out[name] = float("nan")
            continue
        y = np.r_[np.zeros(len(c)), np.ones(len(a))]
        out[name] = float(roc_auc_score(y, np.r_[c, a]))
    return out


def roc_curves(calib: Mapping[str, Tensor], clean: Mapping[str, Tensor],
               adv: Mapping[str, Tensor]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """criterion -> (clean scores, adversarial scores) as NumPy, ``combined`` included."""
    out = {k: (clean[k].double().numpy(), adv[k].double().numpy()) for k in calib}
    out["combined"] = (combined_score(calib, clean).numpy(), combined_score(calib, adv).numpy())
    return out


def summarize(calib: Mapping[str, Tensor], clean: Mapping[str, Tensor], rec: Mapping[str, Any],
              ok: Tensor, y: Tensor, fprs: Sequence[float] = DEFAULT_FPRS) -> dict[str, Any]:
    """Rates and AUCs of one attack record (``scores``, ``pred`` of the adversarial images)."""
    success = ok & (rec["pred"] != y)  # (N,) clean correct and adversarial misclassified
    adv = {k: v[success] for k, v in rec["scores"].items()}
    return {
        "success_rate": float(success.sum()) / max(int(ok.sum()), 1),
        "n_success": int(success.sum()),
        "rates": detection_rates(calib, clean, adv, fprs),
        "auc": roc_aucs(calib, clean, adv),
        "seconds_attack": rec.get("seconds_attack"),
        "seconds_score": rec.get("seconds_score"),
    }
