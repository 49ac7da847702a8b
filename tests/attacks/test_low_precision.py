"""The threat-model contract in float16 and bfloat16, for every registered attack.

Images in half precision are attacked by a float32 model (inputs cast) and by the same model
converted to that dtype (its forward in half precision; the attack's arithmetic stays float32).
The result must keep the input's dtype, lie in [0, 1], and be inside the eps-ball however the
distance is measured: exactly (float64), in float32 and in the input dtype itself. Before the
projection rounded last, towards the clean image, float16 results overshot 8/255 by 1.2e-4.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from fast_configs import fast_config

from advimage.attacks import create_attack, list_attacks
from precision_helpers import max_distances

ATTACKS = list_attacks()
DTYPES = [torch.float16, torch.bfloat16]
N = 16
L2_EPS = 1.0  # digits images are 1x8x8: the box diagonal is 8


def _attack(name: str, norm: str):
    """The attack's fast config in ``norm``, or None when the attack does not take it."""
    kw = {**fast_config(name), "norm": norm}
    if norm == "l2" and math.isfinite(kw.get("eps", 0.0)) and "eps" in kw:
        kw["eps"] = L2_EPS
    try:
        return create_attack(name, **kw)
    except ValueError as err:
        if "norm" in str(err):
            return None
        raise




@pytest.fixture(scope="module")
def models(trained_digits):
    fp32 = trained_digits.model
    return {"fp32-model": fp32, **{str(dt): copy.deepcopy(fp32).to(dt) for dt in DTYPES}}


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("model_dtype", ["fp32-model", "same"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float16", "bfloat16"])
@pytest.mark.parametrize("name", ATTACKS)
def test_low_precision_inside_threat_model(name, dtype, model_dtype, norm, trained_digits,
                                           models) -> None:
    attack = _attack(name, norm)
    if attack is None:
        pytest.skip(f"{name} does not attack in {norm}")
    model = models["fp32-model" if model_dtype == "fp32-model" else str(dtype)]
    x, y = trained_digits.x[:N].to(dtype), trained_digits.y[:N]
    x_adv = attack(model, x, y)
    assert x_adv.dtype == dtype and x_adv.shape == x.shape and x_adv.device == x.device
    assert bool(torch.isfinite(x_adv).all())
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    if math.isfinite(attack.eps):
        for dist in max_distances(x, x_adv, norm):
            assert dist <= attack.eps, f"{name} {dtype} {norm}: {dist!r} > eps {attack.eps!r}"
    with torch.no_grad():  # and it is still an attack, not a no-op
        x32, adv32 = x.float(), x_adv.float()
        clean = (trained_digits.model(x32).argmax(1) == y).float().mean().item()
        robust = (trained_digits.model(adv32).argmax(1) == y).float().mean().item()
    assert robust < clean - 0.3, f"{name} {dtype} {norm}: clean {clean:.2f} robust {robust:.2f}"


def test_float16_at_8_255_stays_inside_the_ball(trained_digits) -> None:
    """The issue's case: PGD at 8/255 on float16 images, distances exactly at most 8/255."""
    x, y = trained_digits.x[:64].half(), trained_digits.y[:64]
    attack = create_attack("pgd", eps=8 / 255, steps=5)
    x_adv = attack(trained_digits.model, x, y)
    dists = max_distances(x, x_adv, "linf")
    assert max(dists) <= 8 / 255
    assert dists[0] > 8 / 255 - 2.0**-10  # the budget is used (to a float16 step), not shrunk


def test_float32_results_unchanged_by_the_low_precision_path(trained_digits) -> None:
    """float32 in, float32 out, bit-identical to running the attack loop and projecting."""
    x, y = trained_digits.x[:16], trained_digits.y[:16]
    attack = create_attack("pgd", eps=8 / 255, steps=3)
    x_adv = attack(trained_digits.model, x, y)
    again = attack(trained_digits.model, x.clone(), y)
    assert x_adv.dtype == torch.float32 and torch.equal(x_adv, again)
    assert float((x_adv - x).abs().max()) <= 8 / 255 + 1e-7
