"""The contract every registered attack keeps (parametrized over ``list_attacks()``).

New attacks are covered as soon as they register; give them a small config in
``fast_configs.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings

import pytest
import torch
from fast_configs import fast_config
from torch import nn

from advimage.attacks import Attack, attack_class, create_attack, list_attacks

ATTACKS = list_attacks()
N = 48  # images per check: enough for accuracy statistics, small enough to be fast


def _make(name: str, **extra: object):
    return create_attack(name, **{**fast_config(name), **extra})


def _init_fields(attack: object) -> set[str]:
    return {f.name for f in dataclasses.fields(attack) if f.init}


def _bn_model() -> nn.Module:
    """Untrained CNN with BatchNorm + dropout, so train-mode leaks would change buffers."""
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5),
        nn.Flatten(), nn.Linear(8 * 64, 10),
    )


@pytest.fixture(scope="module")
def batch(trained_digits):
    return trained_digits.x[:N], trained_digits.y[:N]


@pytest.mark.parametrize("name", ATTACKS)
def test_output_shape_dtype_and_threat_model(name, trained_digits, batch) -> None:
    x, y = batch
    attack = _make(name)
    x_adv = attack(trained_digits.model, x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert not x_adv.requires_grad
    assert bool(attack.threat.contains(x, x_adv).all())
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    # the input is not modified in place
    assert torch.equal(x, trained_digits.x[:N])


@pytest.mark.parametrize("name", ATTACKS)
def test_call_is_the_base_call(name) -> None:
    """Attacks implement ``_run``; validation, freezing, seeding and projection stay shared."""
    cls = attack_class(name)
    assert cls.__call__ is Attack.__call__, f"{name} overrides __call__"
    assert cls.run_prepared is Attack.run_prepared, f"{name} overrides run_prepared"


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_keeps_no_state(name, trained_digits, batch) -> None:
    """An attack is its config: a call leaves its fields as they were and stores no model,
    tensor or result on it (results come back from the call or a ``run`` method)."""
    x, y = batch[0][:8], batch[1][:8]
    attack = _make(name)
    before = copy.deepcopy(vars(attack))
    attack(trained_digits.model, x, y)
    after = vars(attack)
    assert after.keys() == before.keys(), f"{name} added {set(after) - set(before)}"
    for key, value in after.items():
        assert not isinstance(value, torch.Tensor | nn.Module), f"{name}.{key} holds {value!r}"
        assert value == before[key], f"{name}.{key} changed in the call"


@pytest.mark.parametrize("name", ATTACKS)
def test_accuracy_of_trained_model_drops(name, trained_digits, batch) -> None:
    x, y = batch
    model = trained_digits.model
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
        robust = (model(_make(name)(model, x, y)).argmax(1) == y).float().mean().item()
    assert clean > 0.9
    assert robust < clean - 0.5, f"{name}: clean {clean:.2f} -> robust {robust:.2f}"


@pytest.mark.parametrize("name", ATTACKS)
def test_targeted_success_rises(name, trained_digits, batch) -> None:
    x, y = batch
    attack = _make(name)
    target = (y + 1 + torch.arange(len(y), device=y.device) % 9) % 10  # never equal to y
    model = trained_digits.model
    if not attack.supports_targeted:
        with pytest.raises(ValueError, match="targeted"):
            attack(model, x, y, target=target)
        return
    with torch.no_grad():
        before = (model(x).argmax(1) == target).float().mean().item()
        after = (model(attack(model, x, y, target=target)).argmax(1) == target).float().mean()
    assert after.item() > before + 0.4, f"{name}: target hit rate {before:.2f} -> {after:.2f}"


@pytest.mark.parametrize("name", ATTACKS)
def test_model_left_untouched(name) -> None:
    model = _bn_model()
    model.train()
    model[0].weight.requires_grad_(False)  # a mix of flags must come back as it was
    model[1].eval()  # and a mix of modes
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    state = copy.deepcopy(model.state_dict())
    x = torch.rand(8, 1, 8, 8)
    y = torch.arange(8) % 10
    _make(name)(model, x, y)
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():  # weights and BN running stats, bitwise
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("name", ATTACKS)
def test_reproducible_with_seed(name, trained_digits, batch) -> None:
    x, y = batch[0][:16], batch[1][:16]
    model = trained_digits.model
    a = _make(name, seed=5)(model, x, y)
    b = _make(name, seed=5)(model, x, y)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", ATTACKS)
def test_float64_input(name, trained_digits, batch) -> None:
    x, y = batch[0][:8].double(), batch[1][:8]
    attack = _make(name)
    x_adv = attack(trained_digits.model, x, y)  # float32 model, float64 images
    assert x_adv.dtype == torch.float64 and x_adv.shape == x.shape
    assert bool(attack.threat.contains(x, x_adv).all())
    model64 = copy.deepcopy(trained_digits.model).double()
    x_adv64 = attack(model64, x, y)
    assert x_adv64.dtype == torch.float64
    assert bool(attack.threat.contains(x, x_adv64).all())


@pytest.mark.parametrize("name", ATTACKS)
def test_bad_inputs_raise(name, trained_digits, batch) -> None:
    x, y = batch[0][:4], batch[1][:4]
    model = trained_digits.model
    attack = _make(name)
    bad_calls = {
        "x above 1": (x + 2.0, y),
        "x below 0": (x - 2.0, y),
        "NaN": (torch.where(x > 0.5, torch.nan, x), y),
        "label out of range": (x, torch.full_like(y, 10)),
        "negative label": (x, torch.full_like(y, -1)),
        "float labels": (x, y.float()),
        "3-d images": (x[:, 0], y),
        "label count": (x, y[:3]),
        "not a tensor": (x.cpu().numpy(), y),
    }
    for why, (xb, yb) in bad_calls.items():
        with pytest.raises(ValueError):
            attack(model, xb, yb)
            pytest.fail(f"{name}: no ValueError for {why}")
    if attack.supports_targeted:
        with pytest.raises(ValueError, match="differ"):
            attack(model, x, y, target=y.clone())
        with pytest.raises(ValueError):
            attack(model, x, y, target=torch.full_like(y, 11))


@pytest.mark.parametrize("name", ATTACKS)
def test_bad_config_raises_at_construction(name) -> None:
    fields = _init_fields(create_attack(name, **fast_config(name)))
    bad: list[dict] = [{"eps": 0.0}, {"eps": -0.1}, {"eps": math.nan}]
    if "norm" in fields:
        bad.append({"norm": "l3"})
    for key in ("steps", "restarts", "eot", "binary_steps", "n_queries"):
        if key in fields:
            bad.append({key: 0})
    for override in bad:
        with pytest.raises(ValueError):
            _make(name, **override)
    with pytest.raises(ValueError, match="unknown option"):
        _make(name, not_an_option=1)


@pytest.mark.parametrize("name", ATTACKS)
def test_probability_outputs_warn(name, trained_digits) -> None:
    probs = nn.Sequential(trained_digits.model, nn.Softmax(dim=1))
    x, y = trained_digits.x[:4], trained_digits.y[:4]
    with pytest.warns(UserWarning, match="probabilities"):
        _make(name)(probs, x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        _make(name)(trained_digits.model, x, y)  # logits: no warning


def test_registry_lists_core_attacks_and_rejects_unknown() -> None:
    assert {"fgsm", "pgd", "cw-l2"} <= set(ATTACKS)
    with pytest.raises(ValueError, match="pgd"):
        create_attack("no-such-attack")
