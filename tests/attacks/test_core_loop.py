"""FGSM/PGD and the shared loop against hand-written references and their guarantees."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advimage.attacks import FGSM, PGD, Attack, frozen
from advimage.attacks.loop import IterativeAttack
from advimage.threat import ThreatModel


def _linear(d: int = 12, k: int = 4, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, k))


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_fgsm_on_linear_model_matches_closed_form(norm: str, eps: float) -> None:
    # CE gradient of a linear model z = W x + b is W^T (softmax(z) - onehot(y)): no autograd
    model = _linear()
    lin = model[1]
    x = torch.rand(10, 3, 2, 2)
    y = torch.arange(10) % 4
    with torch.no_grad():
        z = x.flatten(1) @ lin.weight.T + lin.bias  # (B, K)
        g = (z.softmax(1) - F.one_hot(y, 4).float()) @ lin.weight  # (B, D)
    if norm == "linf":
        step = eps * g.sign()
    else:
        step = eps * g / g.norm(dim=1, keepdim=True)
    expect = ThreatModel(norm, eps).project(x, x + step.view_as(x))
    got = FGSM(eps=eps, norm=norm, early_stop=False)(model, x, y)
    torch.testing.assert_close(got, expect, atol=1e-6, rtol=0)


def test_fgsm_early_stop_leaves_misclassified_samples_alone() -> None:
    model = _linear()
    x = torch.rand(16, 3, 2, 2)
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = pred.clone()
    y[:8] = (pred[:8] + 1) % 4  # the first half is already misclassified
    x_adv = FGSM(eps=0.1)(model, x, y)
    assert torch.equal(x_adv[:8], x[:8])
    assert not torch.equal(x_adv[8:], x[8:])


def test_pgd_without_early_stop_equals_bare_loop(trained_digits) -> None:
    model = trained_digits.model
    x, y = trained_digits.x[:32], trained_digits.y[:32]
    eps, steps, alpha = 0.2, 5, 0.05
    tm = ThreatModel("linf", eps)
    # the hand-written loop of the benchmark, with the same seeded random start
    x_ref = tm.random_start(x, torch.Generator(x.device).manual_seed(3))  # as the attack seeds
    for _ in range(steps):
        x_ref.requires_grad_(True)
        loss = F.cross_entropy(model(x_ref), y, reduction="none").sum()
        (g,) = torch.autograd.grad(loss, x_ref)
        x_ref = tm.project(x, x_ref.detach() + alpha * g.sign())
    attack = PGD(eps=eps, steps=steps, step_size=alpha, early_stop=False, seed=3)
    assert torch.equal(attack(model, x, y), x_ref)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_early_stop_is_never_weaker(norm: str, eps: float, trained_digits) -> None:
    model = trained_digits.model
    x, y = trained_digits.x[:96], trained_digits.y[:96]
    common = {"eps": eps, "norm": norm, "steps": 8, "seed": 1}
    acc_es = _accuracy(model, PGD(**common, early_stop=True)(model, x, y), y)
    acc_full = _accuracy(model, PGD(**common, early_stop=False)(model, x, y), y)
    assert acc_es <= acc_full
    assert acc_es < _accuracy(model, x, y)


def test_restarts_never_increase_robust_accuracy(trained_digits) -> None:
    model = trained_digits.model
    x, y = trained_digits.x[:96], trained_digits.y[:96]
    for early_stop in (True, False):
        common = {"eps": 0.08, "steps": 4, "seed": 2, "early_stop": early_stop}
        with torch.no_grad():
            fooled1 = model(PGD(**common)(model, x, y)).argmax(1) != y
            fooled3 = model(PGD(**common, restarts=3)(model, x, y)).argmax(1) != y
        # restart 0 is the single run, later ones only replace unsuccessful samples
        assert bool((fooled3 | ~fooled1).all())
        assert int(fooled3.sum()) >= int(fooled1.sum())


def test_pgd_targeted_hits_targets(trained_digits) -> None:
    model = trained_digits.model
    x, y = trained_digits.x[:48], trained_digits.y[:48]
    target = (y + 3) % 10
    x_adv = PGD(eps=0.3, steps=10, loss="margin")(model, x, y, target=target)
    with torch.no_grad():
        hit = (model(x_adv).argmax(1) == target).float().mean().item()
    assert hit > 0.8


def test_step_size_defaults_and_schedules() -> None:
    assert PGD(eps=0.1, steps=10).step_size_at(0) == pytest.approx(0.025)
    cos = PGD(eps=0.1, steps=10, step_size=0.02, schedule="cosine")
    assert cos.step_size_at(0) == pytest.approx(0.02)
    assert cos.step_size_at(5) == pytest.approx(0.01)
    sched = PGD(eps=0.1, steps=8, step_size=0.02, schedule="step")
    sizes = [sched.step_size_at(i) for i in range(8)]
    assert sizes == pytest.approx([0.02] * 4 + [0.002] * 2 + [0.0002] * 2)
    assert FGSM(eps=0.1).step_size_at(0) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="schedule"):
        PGD(schedule="linear")
    with pytest.raises(ValueError, match="step_size"):
        PGD(eps=math.inf)
    with pytest.raises(ValueError, match="loss"):
        PGD(loss="hinge")
    with pytest.raises(TypeError):
        FGSM(steps=3)  # FGSM is exactly one step


def test_seed_controls_randomness_and_global_rng_is_untouched() -> None:
    model = _linear()
    x, y = torch.rand(8, 3, 2, 2), torch.arange(8) % 4
    cfg = {"eps": 0.1, "steps": 2, "step_size": 0.01, "early_stop": False}
    attack = PGD(**cfg)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = attack(model, x, y)
    assert torch.equal(torch.rand(3), expected_next)  # caller's RNG stream unaffected
    assert torch.equal(a, attack(model, x, y))
    assert not torch.equal(a, PGD(**cfg, seed=9)(model, x, y))
    b1 = PGD(**cfg, seed=None)(model, x, y)
    b2 = PGD(**cfg, seed=None)(model, x, y)
    assert not torch.equal(b1, b2)


def test_attack_works_under_no_grad_and_with_plain_callables() -> None:
    model = _linear()
    x, y = torch.rand(4, 3, 2, 2), torch.arange(4)

    def fn(inp: torch.Tensor) -> torch.Tensor:  # not an nn.Module
        return model(inp)

    with torch.no_grad():
        x_adv = PGD(eps=0.1, steps=2)(fn, x, y)
    assert x_adv.shape == x.shape and not torch.equal(x_adv, x)


def test_model_output_shape_is_checked() -> None:
    with pytest.raises(ValueError, match="logits"):
        PGD()(nn.Identity(), torch.rand(2, 1, 2, 2), torch.tensor([0, 1]))


def test_frozen_restores_on_error() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    model.train()
    with pytest.raises(RuntimeError), frozen(model):
        assert not model.training and not model[0].weight.requires_grad
        raise RuntimeError("boom")
    assert model.training and model[1].training and model[0].weight.requires_grad


def test_custom_step_hook_and_state_subsetting(trained_digits) -> None:
    """A momentum subclass (MI-FGSM style) keeps per-sample state across early-stop drops."""

    class Momentum(IterativeAttack):
        name = "momentum-test"

        def init_state(self, x, x_adv):
            return {"g": torch.zeros_like(x), "calls": 0}

        def step(self, x_adv, grad, x, state, i):
            assert state["g"].shape == grad.shape  # subset together with the batch
            state["g"] = state["g"] + grad / grad.abs().flatten(1).mean(1).view(-1, 1, 1, 1)
            return x_adv + self.step_size_at(i) * state["g"].sign()

    model = trained_digits.model
    x, y = trained_digits.x[:64], trained_digits.y[:64]
    x_adv = Momentum(eps=0.2, steps=6)(model, x, y)
    assert _accuracy(model, x_adv, y) < 0.5
    assert isinstance(Momentum(), Attack)
