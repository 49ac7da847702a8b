"""Carlini-Wagner L2: near the analytic minimum on a linear model, smaller than PGD-L2."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advimage.attacks import PGD, CarliniWagnerL2


def _two_class_linear(d: int = 16) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Linear 2-class model and points whose exact minimal L2 adversarial distance is known.

    For z = W x + b with two classes the decision boundary is the hyperplane
    (w0 - w1) . x + (b0 - b1) = 0, so the minimal distance is |z0 - z1| / ||w0 - w1||.
    Points sit near 0.5 with distances small enough that the box [0, 1] stays inactive.
    """
    gen = torch.Generator().manual_seed(0)
    lin = nn.Linear(d, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(2, d, generator=gen))
        w_diff = lin.weight[0] - lin.weight[1]
        # boundary 0.15 (L2) away from the all-0.5 image
        lin.bias.copy_(torch.stack([-0.5 * w_diff.sum() + 0.15 * w_diff.norm(), torch.tensor(0.0)]))
    x = 0.5 + 0.02 * torch.randn(12, 1, 4, 4, generator=gen)
    model = nn.Sequential(nn.Flatten(), lin)
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    # (B,) exact minimal L2 distance
    dist = (z[:, 0] - z[:, 1]).abs() / (lin.weight[0] - lin.weight[1]).norm()
    return model, x, y, dist.detach()


def test_cw_reaches_the_analytic_minimal_distance() -> None:
    model, x, y, d_min = _two_class_linear()
    assert float(d_min.max()) < 0.3  # box inactive: perturbations stay well inside [0, 1]
    attack = CarliniWagnerL2(steps=150, binary_steps=8, lr=0.01, initial_const=1.0)
    x_adv = attack(model, x, y)
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
    assert bool(fooled.all())
    dist = (x_adv - x).flatten(1).norm(dim=1)
    # never below the true minimum (that would be impossible), and close to it
    assert bool((dist >= d_min * (1 - 1e-3)).all())
    assert bool((dist <= d_min * 1.01).all()), (dist / d_min).tolist()


def test_cw_distances_smaller_than_pgd_l2(trained_digits) -> None:
    model = trained_digits.model
    x, y = trained_digits.x[:32], trained_digits.y[:32]
    x_cw = CarliniWagnerL2(steps=30, binary_steps=4, lr=0.05, initial_const=1.0)(model, x, y)
    x_pgd = PGD(eps=2.0, norm="l2", steps=10)(model, x, y)
    with torch.no_grad():
        both = (model(x_cw).argmax(1) != y) & (model(x_pgd).argmax(1) != y)
    assert int(both.sum()) >= 20
    d_cw = (x_cw - x).flatten(1).norm(dim=1)[both]
    d_pgd = (x_pgd - x).flatten(1).norm(dim=1)[both]
    assert float(d_cw.mean()) < float(d_pgd.mean())
    assert float(d_cw.median()) < 0.8 * float(d_pgd.median())


def test_cw_with_finite_eps_is_projected(trained_digits) -> None:
    model = trained_digits.model
    x, y = trained_digits.x[:16], trained_digits.y[:16]
    attack = CarliniWagnerL2(eps=0.5, steps=10, binary_steps=2, lr=0.05)
    assert attack.norm == "l2" and CarliniWagnerL2().eps == math.inf
    x_adv = attack(model, x, y)
    assert float((x_adv - x).flatten(1).norm(dim=1).max()) <= 0.5 + 1e-5


def test_cw_failures_return_the_clean_image(trained_digits) -> None:
    model = trained_digits.model
    x, y = trained_digits.x[:8], trained_digits.y[:8]
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    # one tiny step cannot fool anything with a high confidence requirement
    x_adv = CarliniWagnerL2(steps=1, binary_steps=1, kappa=50.0)(model, x, y)
    assert torch.equal(x_adv[correct], x[correct])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"steps": 0},
        {"binary_steps": 0},
        {"lr": 0.0},
        {"initial_const": -1.0},
        {"kappa": -1.0},
        {"norm": "linf"},
    ],
)
def test_cw_bad_config(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        CarliniWagnerL2(**kwargs)
