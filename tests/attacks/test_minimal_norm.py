"""Minimal-norm (FMN, DDN, DeepFool) and L1/L0 attacks: results, norms and bad input.

The per-sample norms of ``run`` are checked against distances recomputed from the returned
images and an independent forward pass; every norm of FMN and l1-APGD stays inside its threat
model (the contract tests cover one config per registered name).
"""

from __future__ import annotations

import math

import pytest
import torch

from advimage.attacks import APGD, APGDT, DDN, FGSM, FMN, PGD, DeepFool, Square, create_attack
from advimage.lp_balls import lp_norms

N = 48


@pytest.fixture(scope="module")
def batch(trained_digits):
    return trained_digits.model, trained_digits.x[:N], trained_digits.y[:N]


@pytest.mark.parametrize(
    "attack",
    [FMN(norm="linf", steps=30), FMN(norm="l2", steps=30), FMN(norm="l1", steps=30),
     FMN(norm="l0", steps=30), DDN(steps=30), DeepFool(steps=20),
     DeepFool(norm="linf", steps=20)],
    ids=lambda a: f"{a.name}-{a.norm}",
)
def test_run_reports_the_norms_of_its_images(batch, attack) -> None:
    model, x, y = batch
    res = attack.run(model, x, y)
    with torch.no_grad():
        fooled = model(res.x_adv).argmax(1) != y
    assert torch.equal(res.success, fooled)
    assert fooled.float().mean() > 0.9
    want = torch.where(fooled, lp_norms(res.x_adv - x, attack.norm), math.inf)
    assert torch.allclose(res.norms, want, atol=1e-6)
    assert torch.equal(attack(model, x, y), res.x_adv)  # the call returns the same images
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1


def test_finite_eps_shrinks_into_the_ball(batch) -> None:
    model, x, y = batch
    for norm, eps in (("l1", 0.5), ("l0", 2), ("linf", 0.05)):
        attack = FMN(norm=norm, eps=eps, steps=20)
        assert bool(attack.threat.contains(x, attack(model, x, y)).all())


@pytest.mark.parametrize("cls", [APGD, APGDT])
def test_apgd_l1_stays_in_the_ball_and_fools(batch, cls) -> None:
    model, x, y = batch
    attack = cls(norm="l1", eps=2.0, steps=30)
    adv = attack(model, x, y)
    assert bool(attack.threat.contains(x, adv).all())
    assert float(lp_norms(adv - x, "l1").max()) <= 2.0 + 1e-5
    with torch.no_grad():
        assert (model(adv).argmax(1) == y).float().mean() < 0.4


def test_unsupported_norms_and_budgets_are_one_line_errors() -> None:
    cases = [
        (lambda: Square(norm="l0"), "square does not support norm 'l0'; it supports: linf, l2, l1"),
        (lambda: PGD(norm="l0", eps=3), "does not support norm 'l0'"),
        (lambda: FGSM(norm="l1"), "does not support"),
        (lambda: APGD(norm="l0", eps=3), "does not support"),
        (lambda: DDN(norm="linf"), "ddn does not support norm 'linf'"),
        (lambda: DeepFool(norm="l1"), "deepfool does not support"),
        (lambda: FMN(norm="l0", eps=2.5), "whole number"),
        (lambda: FMN(norm="l3"), "unknown norm"),
        (lambda: FMN(gamma=1.5), "gamma"),
        (lambda: DeepFool(candidates=1), "candidates"),
        (lambda: create_attack("fmn", norm="l0", eps=0.5), "whole number"),
    ]
    for make, match in cases:
        with pytest.raises(ValueError, match=match) as info:
            make()
        assert "\n" not in str(info.value)


def test_deepfool_refuses_targets(batch) -> None:
    model, x, y = batch
    with pytest.raises(ValueError, match="targeted"):
        DeepFool()(model, x, y, target=(y + 1) % 10)


def test_targeted_fmn_hits_the_target(batch) -> None:
    model, x, y = batch
    target = (y + 3) % 10
    res = FMN(norm="l2", steps=50).run(model, x, y, target=target)
    with torch.no_grad():
        hit = model(res.x_adv).argmax(1) == target
    assert hit.float().mean() > 0.9 and torch.equal(res.success, hit)
