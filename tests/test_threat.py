"""ThreatModel: projections, distances, random starts and directions against references."""

from __future__ import annotations

import math

import pytest
import torch

from advimage.threat import ThreatModel, l2_norms, orthogonal_part, unit_l2

NORMS = ["linf", "l2"]
ORD = {"linf": math.inf, "l2": 2.0}


def _ref_dist(x: torch.Tensor, x_adv: torch.Tensor, norm: str) -> torch.Tensor:
    """Reference per-sample distance, one sample at a time with vector_norm."""
    pairs = zip(x_adv, x, strict=True)
    return torch.stack([torch.linalg.vector_norm(a - b, ord=ORD[norm]) for a, b in pairs])


@pytest.mark.parametrize("norm", NORMS)
def test_distance_matches_vector_norm(norm: str) -> None:
    tm = ThreatModel(norm, 0.5)
    x, x_adv = torch.rand(6, 3, 5, 5), torch.rand(6, 3, 5, 5)
    d = tm.distance(x, x_adv)
    assert d.shape == (6,)
    torch.testing.assert_close(d, _ref_dist(x, x_adv, norm))


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.7), ("linf", math.inf)])
def test_project_inside_ball_bounds_and_idempotent(norm: str, eps: float) -> None:
    tm = ThreatModel(norm, eps)
    x = torch.rand(8, 3, 6, 6)
    x_adv = x + torch.randn_like(x)  # far outside ball and box
    p = tm.project(x, x_adv)
    assert p.shape == x.shape and p.dtype == x.dtype
    assert bool(tm.contains(x, p).all())
    assert float(p.min()) >= 0.0 and float(p.max()) <= 1.0
    if norm == "linf" and math.isfinite(eps):
        # far-away points land on the cube's surface (clipping to [0, 1] only shrinks deltas)
        assert float(tm.distance(x, p).max()) == pytest.approx(eps, rel=1e-5)
    torch.testing.assert_close(tm.project(x, p), p, atol=1e-6, rtol=0)


def test_project_l2_matches_closed_form_when_box_inactive() -> None:
    tm = ThreatModel("l2", 0.1, bounds=(-10.0, 10.0))
    x = torch.zeros(3, 2, 2, 2)
    delta = torch.randn(3, 2, 2, 2)
    delta[0] *= 0.01 / delta[0].norm()  # already inside: unchanged
    p = tm.project(x, x + delta)
    torch.testing.assert_close(p[0], delta[0])
    expect = delta[1:] / delta[1:].flatten(1).norm(dim=1).view(-1, 1, 1, 1) * 0.1
    torch.testing.assert_close(p[1:], expect)


def test_project_linf_is_coordinate_clamp() -> None:
    tm = ThreatModel("linf", 0.1)
    x = torch.full((1, 1, 1, 3), 0.5)
    x_adv = torch.tensor([[[[0.2, 0.55, 1.7]]]])
    assert tm.project(x, x_adv).flatten().tolist() == pytest.approx([0.4, 0.55, 0.6])
    # at the box edge the clip wins over the ball
    x0 = torch.zeros(1, 1, 1, 2)
    assert tm.project(x0, torch.tensor([[[[-0.05, 0.3]]]])).flatten().tolist() == pytest.approx(
        [0.0, 0.1]
    )


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_random_start_inside_and_reproducible(norm: str, eps: float) -> None:
    tm = ThreatModel(norm, eps)
    x = torch.rand(16, 3, 4, 4)
    a = tm.random_start(x, torch.Generator().manual_seed(3))
    b = tm.random_start(x, torch.Generator().manual_seed(3))
    c = tm.random_start(x, torch.Generator().manual_seed(4))
    assert bool(tm.contains(x, a).all())
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(tm.distance(x, a).min()) > 0


def test_random_start_linf_uniform_in_cube() -> None:
    tm = ThreatModel("linf", 0.2, bounds=(-5.0, 5.0))  # box inactive
    x = torch.zeros(2000, 1, 2, 2)
    d = tm.random_start(x, torch.Generator().manual_seed(0)).flatten()
    assert float(d.abs().max()) <= 0.2
    assert float(d.mean()) == pytest.approx(0.0, abs=0.01)
    assert float(d.var()) == pytest.approx(0.2**2 / 3, rel=0.05)  # var of U(-a, a)


def test_random_start_l2_uniform_in_ball() -> None:
    # uniform in a d-ball: P(r <= s * eps) = s ** d, and directions are isotropic
    d, eps = 4, 1.0
    tm = ThreatModel("l2", eps, bounds=(-5.0, 5.0))
    x = torch.zeros(20000, 1, 2, 2)
    delta = tm.random_start(x, torch.Generator().manual_seed(0))
    r = delta.flatten(1).norm(dim=1)
    assert float(r.max()) <= eps + 1e-6
    for s in (0.5, 0.8):
        assert float((r <= s * eps).float().mean()) == pytest.approx(s**d, abs=0.015)
    mean_dir = (delta.flatten(1) / r[:, None]).mean(0)
    assert float(mean_dir.abs().max()) < 0.03


def test_direction() -> None:
    g = torch.randn(4, 3, 5, 5)
    g[1] = 0.0
    lin = ThreatModel("linf", 0.1).direction(g)
    assert torch.equal(lin, g.sign())
    l2 = ThreatModel("l2", 0.1).direction(g)
    assert torch.isfinite(l2).all() and torch.equal(l2[1], torch.zeros_like(l2[1]))
    norms = l2.flatten(1).norm(dim=1)
    torch.testing.assert_close(norms[[0, 2, 3]], torch.ones(3))
    torch.testing.assert_close(l2[0], g[0] / g[0].norm())


def test_contains_flags_outside_points() -> None:
    tm = ThreatModel("l2", 0.5)
    x = torch.full((3, 1, 2, 2), 0.5)
    x_adv = x.clone()
    x_adv[1, 0, 0, 0] += 0.6  # outside the ball, inside the box? 1.1 > 1: outside both
    x_adv[2, 0, 0, 0] = 0.9  # distance 0.4: inside
    assert tm.contains(x, x_adv).tolist() == [True, False, True]
    box = ThreatModel("linf", math.inf)
    assert box.contains(x, x_adv).tolist() == [True, False, True]


def test_dtype_follows_input() -> None:
    tm = ThreatModel("l2", 0.3)
    x = torch.rand(2, 1, 3, 3, dtype=torch.float64)
    assert tm.random_start(x, torch.Generator().manual_seed(0)).dtype == torch.float64
    assert tm.project(x, x + 1).dtype == torch.float64


@pytest.mark.parametrize(
    "kwargs",
    [
        {"norm": "l3", "eps": 0.1},
        {"norm": "Linf", "eps": 0.1},
        {"norm": "linf", "eps": 0.0},
        {"norm": "linf", "eps": -1.0},
        {"norm": "l2", "eps": float("nan")},
        {"norm": "l2", "eps": "big"},
        {"norm": "l2", "eps": 1.0, "bounds": (1.0, 0.0)},
        {"norm": "l2", "eps": 1.0, "bounds": (0.0, 1.0, 2.0)},
        {"norm": "l2", "eps": 1.0, "bounds": 1.0},
    ],
)
def test_bad_config_raises(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ThreatModel(**kwargs)


def test_unknown_norm_message_lists_choices() -> None:
    with pytest.raises(ValueError, match="linf, l2, l1, l0"):
        ThreatModel("l3", 0.1)  # type: ignore[arg-type]
    assert ThreatModel("linf", math.inf).eps == math.inf


def test_l2_helpers_per_sample() -> None:
    g = torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    g[2] = 0.0
    torch.testing.assert_close(l2_norms(g), _ref_dist(torch.zeros_like(g), g, "l2"))
    u = unit_l2(g)
    assert u[2].abs().sum() == 0  # zero rows stay zero, never NaN
    torch.testing.assert_close(l2_norms(u[[0, 1, 3, 4, 5]]), torch.ones(5))
    h = torch.randn_like(g)
    o = orthogonal_part(g, h)
    dots = (o * h).flatten(1).sum(1)
    torch.testing.assert_close(dots, torch.zeros(6), atol=1e-4, rtol=0)
    # the part along h plus the orthogonal part gives back g
    torch.testing.assert_close(o + (g * unit_l2(h)).flatten(1).sum(1).view(-1, 1, 1, 1)
                               * unit_l2(h), g)


@pytest.mark.parametrize("norm", NORMS)
def test_project_box_first_is_the_reference_order(norm: str) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(8, 1, 5, 5, generator=gen)
    x_adv = x + 0.5 * torch.randn(8, 1, 5, 5, generator=gen)
    tm = ThreatModel(norm, 0.1 if norm == "linf" else 0.7)
    got = tm.project_box_first(x, x_adv)
    if norm == "linf":  # Hu et al.'s official code, bit for bit
        assert torch.equal(got, (x_adv.clamp(0, 1) - x).clamp(-0.1, 0.1) + x)
    assert bool(tm.contains(x, got, atol=1e-6).all())
