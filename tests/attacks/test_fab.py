"""FAB and FAB-T (Croce & Hein, ICML 2020): projections, minimal norms, bad input, and the
differential test against the original code (``pyautoattack``'s ``FABAttack_PT``)."""

from __future__ import annotations

import math

import pytest
import torch

from advimage.attacks import FAB, FABT
from advimage.attacks.fab_projections import project_onto_boundary


def _planes(n: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    t = torch.rand(n, dim, generator=gen, dtype=torch.float64)
    w = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    b = (w * torch.rand(n, dim, generator=gen, dtype=torch.float64)).sum(1)  # box meets plane
    return t, w, b


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-1.0, 3.0)])
def test_projection_lands_on_the_plane_inside_the_box(norm: str, bounds) -> None:  # noqa: ANN001
    t, w, b = _planes(64, 30, 0)
    lo, hi = bounds
    t, b = lo + (hi - lo) * t, b * (hi - lo) + lo * w.sum(1)  # the same planes, box moved
    d = project_onto_boundary(norm, t, w, b, bounds)
    assert torch.allclose((w * (t + d)).sum(1), b, atol=1e-8)
    assert bool(((t + d) >= lo - 1e-9).all() and ((t + d) <= hi + 1e-9).all())
    # no other feasible point of random feasible directions is closer (sampled check)
    order = math.inf if norm == "linf" else 2.0
    best = torch.linalg.vector_norm(d, ord=order, dim=1)
    gen = torch.Generator().manual_seed(1)
    for _ in range(200):
        z = lo + (hi - lo) * torch.rand(t.shape, generator=gen, dtype=t.dtype)  # box points
        # move z onto the plane along w, clip; keep it only where it stays on the plane
        z = (z + ((b - (w * z).sum(1)) / (w * w).sum(1)).unsqueeze(1) * w).clamp(lo, hi)
        on = ((w * z).sum(1) - b).abs() < 1e-9
        dist = torch.linalg.vector_norm(z - t, ord=order, dim=1)
        assert bool((best[on] <= dist[on] + 1e-9).all())


def test_projection_is_the_reference_one() -> None:
    proj = pytest.importorskip("pyautoattack.fab_projections", reason="pyautoattack missing")
    t, w, b = _planes(50, 784, 2)
    t, w, b = t.float(), w.float(), b.float()
    assert torch.equal(project_onto_boundary("linf", t, w, b, (0.0, 1.0)),
                       proj.projection_linf(t, w.clone(), b.clone()))
    assert torch.equal(project_onto_boundary("l2", t, w, b, (0.0, 1.0)),
                       proj.projection_l2(t, w.clone(), b.clone()))


def test_minimal_norms_are_the_distances_of_the_points(trained_digits) -> None:  # noqa: ANN001
    td = trained_digits
    x, y = td.x[:32], td.y[:32]
    res = FAB(eps=math.inf, norm="l2", steps=20).run(td.model, x, y)
    fooled = td.model(res.x_adv).argmax(1) != y
    dist = torch.linalg.vector_norm((res.x_adv - x).flatten(1), dim=1)
    assert bool(fooled.all())  # an unbounded minimal-norm attack fools every digit
    assert torch.allclose(res.norms, dist, atol=1e-5)


def test_bad_input_raises_one_line() -> None:
    for bad in (
        lambda: FAB(norm="l1"),
        lambda: FAB(eps=math.inf, restarts=2),
        lambda: FAB(steps=0),
        lambda: FAB(beta=0.0),
        lambda: FABT(n_target_classes=0),
    ):
        with pytest.raises(ValueError) as err:
            bad()
        assert "\n" not in str(err.value)


@pytest.mark.peers
@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.15), ("l2", 0.9)])
@pytest.mark.parametrize("targeted", [False, True])
def test_matches_pyautoattack_fab(trained_digits, norm: str, eps: float, targeted: bool) -> None:  # noqa: ANN001
    """Same points, same budgets, no random start, no early stop: the same iterates up to
    float noise, so robust accuracy must agree exactly and median norms within 1%."""
    fab_pt = pytest.importorskip("pyautoattack.fab_pt", reason="pyautoattack missing")
    td = trained_digits
    x, y = td.x[:48], td.y[:48]
    ref = fab_pt.FABAttack_PT(td.model, norm="Linf" if norm == "linf" else "L2", n_iter=30,
                              eps=eps, seed=0, targeted=targeted, device="cpu",
                              n_target_classes=3)
    theirs = ref.perturb(x, y)
    attack = (FABT(n_target_classes=3, eps=eps, norm=norm, steps=30, early_stop=False)
              if targeted else FAB(eps=eps, norm=norm, steps=30, early_stop=False))
    ours = attack.run(td.model, x, y)
    with torch.no_grad():
        r_ours = td.model(ours.x_adv).argmax(1) == y
        r_theirs = td.model(theirs).argmax(1) == y
    assert torch.equal(r_ours, r_theirs)
    order = math.inf if norm == "linf" else 2.0
    n_theirs = torch.linalg.vector_norm((theirs - x).flatten(1), ord=order, dim=1)[~r_theirs]
    n_ours = torch.linalg.vector_norm((ours.x_adv - x).flatten(1), ord=order, dim=1)[~r_ours]
    assert float(n_ours.median()) <= float(n_theirs.median()) * 1.01 + 1e-6
