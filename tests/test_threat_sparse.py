"""L1 and L0 threat models: exact projections checked against independent solvers.

L1: scipy's SLSQP on the split QP ``min ||p - n - v||^2`` over ``p, n >= 0`` with box bounds
and ``sum(p + n) <= eps`` (an independent formulation of the same projection), on small random
cases. L0: brute force over every subset of k pixels.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from advimage.lp_balls import lp_norms, project_l0, project_l1_box
from advimage.threat import ThreatModel


def _qp_l1_box(v: np.ndarray, x: np.ndarray, eps: float) -> np.ndarray:
    n = len(v)
    hi_room, lo_room = 1.0 - x, x  # p <= 1 - x, q <= x

    def obj(z: np.ndarray) -> float:
        d = z[:n] - z[n:]
        return float(((d - v) ** 2).sum())

    def jac(z: np.ndarray) -> np.ndarray:
        g = 2 * (z[:n] - z[n:] - v)
        return np.concatenate([g, -g])

    cons = [{"type": "ineq", "fun": lambda z: eps - z.sum(), "jac": lambda z: -np.ones(2 * n)}]
    bounds = [(0, r) for r in hi_room] + [(0, r) for r in lo_room]
    res = minimize(obj, np.zeros(2 * n), jac=jac, bounds=bounds, constraints=cons,
                   method="SLSQP", options={"ftol": 1e-14, "maxiter": 500})
    return res.x[:n] - res.x[n:]


@pytest.mark.parametrize("seed", range(12))
def test_l1_box_projection_matches_qp(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 9))
    x = rng.uniform(0, 1, (4, n))
    x[:, 0] = 0.0  # coordinates on the box faces
    x[:, 1] = 1.0
    v = rng.normal(0, 0.8, (4, n))
    eps = rng.uniform(0.05, 2.0, 4)
    got = project_l1_box(
        torch.tensor(v), torch.tensor(x), torch.tensor(eps), (0.0, 1.0)
    ).numpy()
    for i in range(4):
        want = _qp_l1_box(v[i], x[i], float(eps[i]))
        np.testing.assert_allclose(got[i], want, atol=2e-5)
        assert np.abs(got[i]).sum() <= eps[i] + 1e-9
        assert (x[i] + got[i] >= -1e-12).all() and (x[i] + got[i] <= 1 + 1e-12).all()


def test_l1_projection_inside_unchanged_and_batched_4d() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 4, 4, generator=gen)
    v = 0.3 * torch.randn(5, 3, 4, 4, generator=gen)
    eps = torch.tensor([0.5, 1.0, 2.0, math.inf, 100.0])
    d = project_l1_box(v, x, eps, (0.0, 1.0))
    clip = (x + v).clamp(0, 1) - x
    assert torch.allclose(d[3], clip[3]) and torch.allclose(d[4], clip[4])  # fits already
    l1 = lp_norms(d, "l1")
    assert torch.allclose(l1[:3], eps[:3], rtol=1e-5)  # outside rows land on the sphere
    again = project_l1_box(d, x, eps, (0.0, 1.0))
    assert torch.allclose(again, d, atol=1e-6)  # idempotent


def _l0_brute(v: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """v, x: (C, P) pixels as columns; best subset of k pixels by squared distance."""
    clipped = np.clip(x + v, 0, 1) - x
    best, best_d = None, math.inf
    for keep in itertools.combinations(range(v.shape[1]), k):
        d = np.zeros_like(v)
        d[:, list(keep)] = clipped[:, list(keep)]
        dist = ((d - v) ** 2).sum()
        if dist < best_d - 1e-12:
            best, best_d = d, dist
    assert best is not None
    return best


@pytest.mark.parametrize("seed", range(6))
def test_l0_projection_matches_brute_force(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 2, 2, 3, generator=gen, dtype=torch.float64)  # 6 pixels, 2 channels
    v = torch.randn(3, 2, 2, 3, generator=gen, dtype=torch.float64)
    k = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    got = project_l0(v, x, k, (0.0, 1.0))
    for i in range(3):
        want = _l0_brute(v[i].flatten(1).numpy(), x[i].flatten(1).numpy(), int(k[i]))
        np.testing.assert_allclose(got[i].flatten(1).numpy(), want, atol=1e-12)
    assert (lp_norms(got, "l0") <= k).all()


def test_threat_model_l1_l0_contains_projection_and_random_start() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(6, 3, 5, 5, generator=gen)
    for norm, eps in (("l1", 3.0), ("l0", 4)):
        t = ThreatModel(norm, eps)
        start = t.random_start(x, gen)
        assert bool(t.contains(x, start).all())
        p = t.project(x, x + torch.randn(6, 3, 5, 5, generator=gen))
        assert bool(t.contains(x, p).all())
        assert torch.equal(t.project(x, p), p) or torch.allclose(t.project(x, p), p, atol=1e-6)
    l0 = ThreatModel("l0", 4).distance(x, ThreatModel("l0", 4).random_start(x, gen))
    assert torch.equal(l0, torch.full((6,), 4.0))  # counted per pixel, over channels


def test_l0_budget_must_be_whole_and_l1_step_is_sparse() -> None:
    with pytest.raises(ValueError, match="whole number"):
        ThreatModel("l0", 2.5)
    ThreatModel("l0", math.inf)  # minimal-norm attacks: only the box
    g = torch.tensor([[0.1, -0.7, 0.3]])
    assert torch.equal(ThreatModel("l1", 1.0).direction(g), torch.tensor([[0.0, -1.0, 0.0]]))
