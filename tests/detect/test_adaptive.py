"""The paper's gray/white-box attacks and the adaptive attack on the digits CNN."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from advimage.detect import AdaptiveAttack, HuAttack, NoiseSignatureDetector
from advimage.detect.adaptive import _swap_probs
from advimage.detect.config import DetectorConfig

DIGITS = DetectorConfig(sigma=0.05, n_noise=4, c2t_lr=0.005, c2t_radius=0.5, c2t_cap=40)


def test_swap_probs():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    out = _swap_probs(p, torch.tensor([0, 2]), torch.tensor([2, 1]))
    assert torch.equal(out, torch.tensor([[0.1, 0.2, 0.7], [0.1, 0.6, 0.3]]))


@pytest.mark.parametrize("objective", ["pgd", "cw"])
def test_gray_attack_reaches_target_within_ball(digits_model, digits_test, objective):
    x, y = digits_test[0][:40], digits_test[1][:40]
    target = (y + 1) % 10
    atk = HuAttack(eps=0.2, objective=objective, steps=30, lr=0.03)
    x_adv = atk(digits_model, x, y, target=target)
    assert float((x_adv - x).abs().max()) <= 0.2 + 1e-6
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    with torch.no_grad():
        hit = (digits_model(x_adv).argmax(1) == target).float().mean()
    assert hit > 0.5  # a random class is hit by chance 10% of the time


def test_white_attack_minimizes_its_combined_loss(digits_model, digits_test):
    x, y = digits_test[0][:60], digits_test[1][:60]
    kw = dict(eps=0.2, objective="pgd", steps=30, detector=DIGITS, seed=1)
    white_atk = HuAttack(setting="white", **kw)
    with torch.no_grad():
        logits = digits_model(x)
    label = logits.argmax(1)
    target = (label + 3) % 10
    gray = HuAttack(setting="gray", **kw)(digits_model, x, y, target=target)
    white = white_atk(digits_model, x, y, target=target)
    st = {"target": target, "dist": _swap_probs(F.softmax(logits, 1), label, target)}

    def loss(z):
        g = torch.Generator().manual_seed(5)  # same noise and C2 targets for both
        return float(white_atk._loss(digits_model, z.requires_grad_(True), st, g).mean().detach())

    assert loss(white) < loss(gray)


def test_adaptive_attack_fools_and_evades_c1(digits_model, digits_test):
    x, y = digits_test[0][:60], digits_test[1][:60]
    det = NoiseSignatureDetector(digits_model, DIGITS, "c1", seed=0)
    thr = float(det.score(x)["c1"].quantile(0.9))
    atk = AdaptiveAttack(eps=0.2, steps=40, detector=DIGITS, c1_threshold=thr, kappa=1.0)
    x_adv = atk(digits_model, x, y)
    assert float((x_adv - x).abs().max()) <= 0.2 + 1e-6
    with torch.no_grad():
        fooled = digits_model(x_adv).argmax(1) != y
    assert fooled.float().mean() > 0.7
    # against a plain high-confidence-free PGD, the adaptive images look more natural to C1
    from advimage.attacks import PGD

    pgd = PGD(eps=0.2, steps=40)(digits_model, x, y)
    with torch.no_grad():
        fooled_pgd = digits_model(pgd).argmax(1) != y
    c1_adapt = det.score(x_adv)["c1"][fooled].mean()
    c1_pgd = det.score(pgd)["c1"][fooled_pgd].mean()
    assert float(c1_adapt) < float(c1_pgd)


def test_detector_loss_is_differentiable(digits_model, digits_test):
    x = digits_test[0][:4].clone().requires_grad_(True)
    atk = AdaptiveAttack(eps=0.1, detector=DIGITS)
    logits = digits_model(x)
    loss = atk.detector_loss(digits_model, x, logits, torch.Generator().manual_seed(0))
    assert loss.shape == (4,)
    (g,) = torch.autograd.grad(loss.sum(), x)
    assert float(g.abs().sum()) > 0
    assert torch.isfinite(F.softmax(logits, 1)).all()


def test_bad_settings():
    with pytest.raises(ValueError, match="objective"):
        HuAttack(objective="fgsm")
    with pytest.raises(ValueError, match="setting"):
        HuAttack(setting="black")
    with pytest.raises(ValueError, match="L-inf"):
        HuAttack(norm="l2")
    with pytest.raises(ValueError, match="steps"):
        AdaptiveAttack(steps=0)
    with pytest.raises(ValueError, match="kappa"):
        AdaptiveAttack(kappa=-1)
    with pytest.raises(ValueError, match="does not support targeted"):
        AdaptiveAttack()(lambda z: z.flatten(1)[:, :3], torch.zeros(2, 1, 2, 2),
                         torch.tensor([0, 1]), target=torch.tensor([1, 2]))
