"""HopSkipJump (Chen, Jordan & Wainwright, 2020): budget, early exit, the search pieces checked
against closed forms on a linear classifier, and Foolbox's HopSkipJump at equal queries."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from advimage.attacks import HopSkipJump, create_attack
from advimage.attacks.hsj_search import Oracle, binary_search, estimate_direction
from advimage.threat import l2_norms


class Linear2(nn.Module):
    """Two classes, logits ``(0, w.x + b)``: the boundary is the hyperplane ``w.x + b = 0``."""

    def __init__(self, w: Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone(), requires_grad=False)
        self.b = b

    def forward(self, x: Tensor) -> Tensor:
        s = x.flatten(1) @ self.w.flatten() + self.b
        return torch.stack([torch.zeros_like(s), s], dim=1)


@pytest.fixture
def linear() -> tuple[Linear2, Tensor, Tensor]:
    """A hyperplane through the middle of the box and 8 points on its class-0 side."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(1, 8, 8, generator=gen)
    x = 0.5 + 0.1 * torch.randn(8, 1, 8, 8, generator=gen)
    model = Linear2(w, -0.5 * float(w.sum()))  # through the centre of the box
    s = model(x)[:, 1]
    x = torch.where((s > 0).view(-1, 1, 1, 1), 1.0 - x, x)  # mirror to the class-0 side
    return model, x.clamp(0, 1), torch.zeros(8, dtype=torch.long)


def _plane_distance(model: Linear2, x: Tensor) -> Tensor:
    """Closed-form L2 distance of each row of ``x`` to the hyperplane."""
    w = model.w.flatten()
    return (x.flatten(1) @ w + model.b).abs() / w.norm()


def test_binary_search_finds_the_analytic_crossing(linear) -> None:
    model, x, y = linear
    far = x + 3.0 * model.w / model.w.norm() * _plane_distance(model, x).view(-1, 1, 1, 1)
    oracle = Oracle(model, y, None, budget=1000, chunk=64)
    idx = torch.arange(len(x))
    thr = torch.full((len(x),), 1e-4)
    out = binary_search(oracle, idx, x, far, "l2", thr)
    # the blend weight where w.(x + a (far - x)) + b = 0 is exactly 1/3
    alpha = l2_norms(out - x) / l2_norms(far - x)
    assert torch.all(alpha >= 1 / 3 - 1e-6) and torch.all(alpha <= 1 / 3 + 1e-4 + 1e-6)
    assert bool((model(out).argmax(1) == 1).all())  # the adversarial end
    assert torch.all(oracle.used == oracle.used[0]) and int(oracle.used[0]) == 14  # 2^-14 < 1e-4


def test_gradient_estimate_points_along_the_normal(linear) -> None:
    model, x, y = linear
    on_plane = x - (model(x)[:, 1] / model.w.norm() ** 2).view(-1, 1, 1, 1) * model.w
    oracle = Oracle(model, y, None, budget=10_000, chunk=512)
    idx = torch.arange(len(x))
    evals = torch.full((len(x),), 2000)
    gen = torch.Generator().manual_seed(1)
    delta = torch.full((len(x),), 0.01)
    grad = estimate_direction(oracle, idx, on_plane, delta, evals, "l2", (0.0, 1.0), gen)
    cos = (grad.flatten(1) @ model.w.flatten()) / model.w.norm()
    # E[cos] for d = 64 and n = 2000 sign-weighted Gaussian probes is about 0.92
    assert torch.all(cos > 0.8), cos
    assert torch.all(oracle.used == 2000)


def test_l2_distance_approaches_the_closed_form_minimum(linear) -> None:
    model, x, y = linear
    res = HopSkipJump(norm="l2", queries=3000, seed=0).run(model, x, y)
    best = _plane_distance(model, x)
    assert bool((model(res.x_adv).argmax(1) == 1).all())
    assert torch.allclose(res.distances, l2_norms(res.x_adv - x), rtol=1e-5)
    assert torch.all(res.distances >= best * (1 - 1e-4))
    assert torch.all(res.distances <= best * 1.05), res.distances / best


def test_budget_is_kept_and_counted(trained_digits) -> None:
    x, y = trained_digits.x[:16], trained_digits.y[:16]
    for budget in (1, 37, 300):
        res = HopSkipJump(queries=budget, steps=50).run(trained_digits.model, x, y)
        assert int(res.queries.max()) <= budget
        if budget == 1:  # the clean check alone: nothing attacked
            assert torch.equal(res.x_adv, x)
    assert int(res.queries.min()) == 300  # no row stops early at eps = inf while budget lasts


def test_early_exit_within_eps(trained_digits) -> None:
    model, x, y = trained_digits.model, trained_digits.x[:16], trained_digits.y[:16]
    full = HopSkipJump(queries=1500).run(model, x, y)
    eps = float(full.distances.median()) * 2  # about half of the points are done right away
    capped = HopSkipJump(eps=eps, queries=1500).run(model, x, y)
    within = capped.distances <= eps
    assert bool(within.any())
    assert int(capped.queries[within].max()) < 1500  # those stopped early
    assert bool((model(capped.x_adv[within]).argmax(1) != y[within]).all())
    assert bool((l2_norms(capped.x_adv - x) <= eps + 1e-6).all())


def test_already_misclassified_rows_cost_one_query(trained_digits) -> None:
    model, x = trained_digits.model, trained_digits.x[:8]
    y = (model(x).argmax(1) + 1) % 10  # every row already "fooled"
    res = HopSkipJump(queries=500).run(model, x, y)
    assert torch.equal(res.x_adv, x) and torch.all(res.queries == 1)
    assert torch.all(res.distances == 0)


def test_linf_result_is_adversarial_and_counted(trained_digits) -> None:
    model, x, y = trained_digits.model, trained_digits.x[:8], trained_digits.y[:8]
    res = HopSkipJump(norm="linf", queries=600).run(model, x, y)
    ok = res.distances.isfinite()
    assert bool((model(res.x_adv[ok]).argmax(1) != y[ok]).all())
    linf = (res.x_adv - x).flatten(1).abs().amax(1)
    assert torch.allclose(res.distances[ok], linf[ok])


@pytest.mark.parametrize(
    "bad",
    [{"norm": "l1"}, {"queries": 0}, {"queries": -5}, {"steps": 0}, {"gamma": 0.0},
     {"init_evals": 0}, {"queries": 2.5}],
)
def test_bad_config_is_one_line_value_error(bad) -> None:
    with pytest.raises(ValueError) as err:
        create_attack("hsj", **bad)
    assert "\n" not in str(err.value)


@pytest.mark.peers
@pytest.mark.slow
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_median_norm_matches_foolbox_at_equal_queries(trained_digits, norm: str) -> None:
    """Foolbox 3.3's HopSkipJump, one image per call (batched, it normalises the probes over
    the whole batch, which shrinks each image's probe radius by sqrt(batch) and weakens it),
    5 iterations; advimage gets the same mean number of queries. Measured on these 20 digits:
    ratio of medians 0.93-1.04 (l2) and 1.03-1.04 (linf) at 5 and 15 iterations."""
    pytest.importorskip("foolbox")
    import peers

    model = trained_digits.model
    x, y = trained_digits.x[:24], trained_digits.y[:24]
    ok = model(x).argmax(1) == y
    x, y = x[ok][:20], y[ok][:20]
    torch.manual_seed(0)
    runs = [peers.fb_hsj(model, x[i:i + 1], y[i:i + 1], steps=5, norm=norm) for i in range(len(x))]
    x_fb = torch.cat([r[0] for r in runs])
    budget = math.ceil(sum(r[1] for r in runs) / len(x))
    res = HopSkipJump(norm=norm, queries=budget, steps=1000).run(model, x, y)
    assert bool((model(x_fb).argmax(1) != y).all()) and bool(res.distances.isfinite().all())
    dist_fb = (l2_norms(x_fb - x) if norm == "l2" else (x_fb - x).flatten(1).abs().amax(1))
    assert float(res.queries.float().mean()) <= budget
    assert float(res.distances.median()) <= 1.15 * float(dist_fb.median())
