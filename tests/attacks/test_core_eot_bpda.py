"""EOT (gradient averaging for randomized models) and BPDA (straight-through surrogates)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advimage.attacks import BPDA, EOT, PGD, Attack, CarliniWagnerL2, list_attacks
from advimage.attacks.loop import declares_deterministic, input_gradient
from advimage.attacks.registry import create_attack
from advimage.model_flags import DeclaresFlags


class Noisy(nn.Module):
    """A randomized defense: Gaussian input noise (global RNG) before the classifier."""

    def __init__(self, inner: nn.Module, sigma: float = 0.1) -> None:
        super().__init__()
        self.inner, self.sigma = inner, sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x + self.sigma * torch.randn_like(x))


def _quantize(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * 4) / 4  # 5 grey levels: gradient zero almost everywhere


def test_input_gradient_averages_passes() -> None:
    model = Noisy(nn.Sequential(nn.Flatten(), nn.Linear(16, 5)), sigma=0.5)
    x, y = torch.rand(6, 1, 4, 4), torch.arange(6) % 5

    def objective(z: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(z, y, reduction="none")

    torch.manual_seed(7)
    grad, loss, logits = input_gradient(model, x, objective, eot=4)
    torch.manual_seed(7)
    singles = [input_gradient(model, x, objective, eot=1) for _ in range(4)]
    torch.testing.assert_close(grad, torch.stack([s[0] for s in singles]).mean(0))
    torch.testing.assert_close(loss, torch.stack([s[1] for s in singles]).mean(0))
    torch.testing.assert_close(logits, torch.stack([s[2] for s in singles]).mean(0))
    assert not torch.allclose(singles[0][0], singles[1][0])  # the passes really differ
    with pytest.raises(ValueError, match="eot"):
        input_gradient(model, x, objective, eot=0)


class Counting(nn.Module):
    """Counts forward passes; declares nothing (a plain model)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


class Declared(Counting, DeclaresFlags):
    """A counting model that declares ``is_randomized`` (model_flags reads it)."""

    is_differentiable = True
    uses_bpda = False

    def __init__(self, inner: nn.Module, randomized: bool) -> None:
        super().__init__(inner)
        self.randomized = randomized

    @property
    def is_randomized(self) -> bool:
        return self.randomized


def test_eot_takes_one_pass_only_on_a_declared_deterministic_model() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
    x, y = torch.rand(6, 1, 4, 4), torch.arange(6) % 5

    def objective(z: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(z, y, reduction="none")

    want = input_gradient(net, x, objective, eot=1)
    declared = Declared(net, randomized=False)
    got = input_gradient(declared, x, objective, eot=8)
    assert declared.calls == 1 and declares_deterministic(declared)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    # undeclared, declared random, or hiding a random declared submodule: every pass runs
    random_inside = Declared(Declared(net, randomized=True), randomized=False)
    for model in (Counting(net), Declared(net, randomized=True), random_inside):
        input_gradient(model, x, objective, eot=8)
        assert model.calls == 8 and not declares_deterministic(model)
    assert not declares_deterministic(lambda z: z)  # a plain callable declares nothing


def test_eot_one_equals_plain_attack_and_is_reproducible(trained_digits) -> None:
    model = Noisy(trained_digits.model)
    x, y = trained_digits.x[:32], trained_digits.y[:32]
    base = PGD(eps=0.2, steps=5)
    assert torch.equal(EOT(base, 1)(model, x, y), base(model, x, y))
    eot = EOT(base, 4)
    assert eot.eot == 4 and base.eot == 1  # a copy; the original is untouched
    first = eot(model, x, y)
    assert torch.equal(first, eot(model, x, y))
    assert not torch.equal(first, base(model, x, y))
    assert bool(eot.threat.contains(x, first).all())


def test_eot_attack_beats_the_randomized_model(trained_digits) -> None:
    model = Noisy(trained_digits.model, sigma=0.2)
    x, y = trained_digits.x[:48], trained_digits.y[:48]
    x_adv = EOT(PGD(eps=0.25, steps=8, early_stop=False), 4)(model, x, y)
    with torch.no_grad():  # judged on the noise-free classifier and on the noisy one
        assert (trained_digits.model(x_adv).argmax(1) == y).float().mean() < 0.3
        assert (model(x_adv).argmax(1) == y).float().mean() < 0.4


def test_eot_applies_to_every_gradient_attack_and_rejects_others() -> None:
    assert EOT(CarliniWagnerL2(steps=2), 3).eot == 3
    for name in list_attacks():
        attack = create_attack(name)
        if "eot" in {f.name for f in dataclasses.fields(attack) if f.init}:
            assert EOT(attack, 2).eot == 2

    @dataclasses.dataclass
    class GradientFree(Attack):
        def _run(self, model, x, y, target, generator):
            return x

    with pytest.raises(ValueError, match="gradients"):
        EOT(GradientFree(), 2)
    with pytest.raises(ValueError):
        EOT(PGD(), 0)
    with pytest.raises(ValueError):
        EOT("pgd", 2)  # type: ignore[arg-type]


def test_bpda_forward_is_module_and_backward_is_surrogate() -> None:
    x = torch.rand(3, 1, 4, 4, requires_grad=True)
    w = torch.randn(3, 1, 4, 4)
    out = BPDA(_quantize)(x)
    assert torch.equal(out, _quantize(x.detach()))
    (g,) = torch.autograd.grad((out * w).sum(), x)
    torch.testing.assert_close(g, w)  # identity surrogate: straight-through
    out_s = BPDA(_quantize, surrogate=torch.sigmoid)(x)
    torch.testing.assert_close(out_s, _quantize(x.detach()))
    (g_s,) = torch.autograd.grad((out_s * w).sum(), x)
    sig = torch.sigmoid(x.detach())
    torch.testing.assert_close(g_s, w * sig * (1 - sig))
    # the true transform has no useful gradient at all
    (g_true,) = torch.autograd.grad((_quantize(x) * w).sum(), x)
    assert torch.equal(g_true, torch.zeros_like(g_true))


def test_bpda_lets_pgd_break_a_quantizing_defense(trained_digits) -> None:
    x, y = trained_digits.x[:48], trained_digits.y[:48]

    class Quantize(nn.Module):
        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            return _quantize(inp)

    defended = nn.Sequential(Quantize(), trained_digits.model)
    attackable = nn.Sequential(BPDA(Quantize()), trained_digits.model)
    attack = PGD(eps=0.3, steps=10)

    def acc(x_adv: torch.Tensor) -> float:
        with torch.no_grad():
            return (defended(x_adv).argmax(1) == y).float().mean().item()

    naive = acc(attack(defended, x, y))  # zero gradients: only the random start moves
    bpda = acc(attack(attackable, x, y))
    assert bpda < 0.2 and bpda < naive - 0.4


def test_bpda_bad_arguments() -> None:
    with pytest.raises(ValueError, match="callable"):
        BPDA(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same shape"):
        BPDA(lambda t: t.flatten(1))(torch.rand(2, 1, 2, 2))
