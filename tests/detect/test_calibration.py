"""Thresholds at a target FPR: ties, joint budget, the minimum-size rule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from advimage.detect import check_fpr, joint_thresholds, min_calibration_size, threshold_at


def test_threshold_with_ties():
    s = torch.tensor([1, 2, 2, 2, 3, 5, 5, 7, 9, 9]).float()
    assert threshold_at(s, 0) == 9.0
    assert threshold_at(s, 1) == 9.0  # two 9s tie: one flag is impossible, zero is kept
    assert threshold_at(s, 2) == 7.0
    assert threshold_at(s, 4) == 5.0  # 7, 9, 9 above: 3 <= 4
    for m in range(10):
        thr = threshold_at(s, m)
        assert int((s > thr).sum()) <= m
        # optimal: no smaller calibration score would also respect the budget
        smaller = s[s < thr]
        if smaller.numel():
            assert int((s > smaller.max()).sum()) > m


def test_min_calibration_size_rule():
    assert min_calibration_size(0.01) == 100
    assert min_calibration_size(0.05) == 20
    assert min_calibration_size(0.3) == 4
    scores = {"c1": torch.rand(99)}
    with pytest.raises(ValueError, match="at least 100"):
        joint_thresholds(scores, 0.01)
    _, fpr, _ = joint_thresholds({"c1": torch.rand(100)}, 0.01)
    assert fpr == pytest.approx(0.01)
    for bad in (0, 1, -0.1, 1.5, "x", None):
        with pytest.raises(ValueError, match="fpr"):
            check_fpr(bad)


def brute_force(cols, fpr):
    """Largest common per-criterion budget m whose union FPR <= fpr, by enumeration."""
    n = len(next(iter(cols.values())))
    budget = math.floor(fpr * n + 1e-9)
    best = None
    for m in range(budget + 1):
        thr = {}
        for k, v in cols.items():
            s = sorted(v)
            thr[k] = s[n - 1 - m]
        union = sum(any(cols[k][i] > thr[k] for k in cols) for i in range(n))
        if union <= budget:
            best = (thr, union / n)
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_joint_thresholds_match_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    n = 200
    base = torch.rand(n, generator=g)
    cols = {  # correlated criteria, two of them integer-valued with many ties
        "c1": base + 0.3 * torch.rand(n, generator=g),
        "c2t": (base * 20).round() + torch.randint(0, 3, (n,), generator=g),
        "c2u": torch.randint(0, 5, (n,), generator=g).float(),
    }
    for fpr in (0.05, 0.1, 0.2):
        thr, achieved, per = joint_thresholds(cols, fpr)
        want_thr, want_fpr = brute_force({k: v.tolist() for k, v in cols.items()}, fpr)
        assert thr == pytest.approx(want_thr)
        assert achieved == pytest.approx(want_fpr) and achieved <= fpr
        flagged = torch.zeros(n, dtype=torch.bool)
        for k, v in cols.items():
            assert per[k] == pytest.approx(float((v > thr[k]).float().mean()))
            flagged |= v > thr[k]
        assert achieved == pytest.approx(float(flagged.float().mean()))
        # joint is never stricter than splitting the budget equally (Bonferroni)
        split = math.floor(fpr * n / 3 + 1e-9)
        for k, v in cols.items():
            assert thr[k] <= threshold_at(v, split)


def test_joint_thresholds_bad_input():
    with pytest.raises(ValueError, match="same number"):
        joint_thresholds({"c1": torch.rand(50), "c2t": torch.rand(40)}, 0.1)
    with pytest.raises(ValueError, match="at least one"):
        joint_thresholds({}, 0.1)


def test_every_subset_respects_target():
    cols = {"a": torch.arange(30.0), "b": torch.arange(30.0).flip(0)}
    for r in (1, 2):
        for keys in itertools.combinations(cols, r):
            _, achieved, _ = joint_thresholds({k: cols[k] for k in keys}, 0.2)
            assert achieved <= 0.2
