"""Straight-through one-step surrogates of C2 (the paper's white-box attack terms)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from advimage.detect import c2t_surrogate_loss, c2u_surrogate_loss, one_step_attack


def _step_by_hand(model, x, label, lr, radius, target=None):
    """One official step (box clamp, then ball clamp) computed independently."""
    xg = x.clone().requires_grad_(True)
    out = model(xg)
    loss = (F.cross_entropy(out, target, reduction="sum") if target is not None
            else -F.cross_entropy(out, label, reduction="sum"))
    (g,) = torch.autograd.grad(loss, xg)
    step = torch.clamp(x - lr * g, 0, 1)
    return torch.clamp(step - x, -radius, radius) + x


def test_one_step_value_and_identity_jacobian(digits_model, digits_test):
    x = digits_test[0][:6]
    with torch.no_grad():
        label = digits_model(x).argmax(1)
    target = (label + 1) % 10
    for tgt in (None, target):
        want = _step_by_hand(digits_model, x, label, 0.2, 0.1, tgt)
        xg = x.clone().requires_grad_(True)
        out = one_step_attack(digits_model, xg, label, lr=0.2, radius=0.1, target=tgt)
        assert torch.allclose(out, want, atol=1e-6)
        assert not torch.equal(out.detach(), x)  # the step moved
        w = torch.randn_like(x)
        (g,) = torch.autograd.grad((w * out).sum(), xg)
        assert torch.equal(g, w)  # straight-through: d out / d x = I


def test_c2t_surrogate_gradient(digits_model, digits_test):
    x = digits_test[0][:5]
    with torch.no_grad():
        label = digits_model(x).argmax(1)
    target = (label + 3) % 10
    xg = x.clone().requires_grad_(True)
    loss = c2t_surrogate_loss(digits_model, xg, target, lr=0.05, radius=0.3)
    (g,) = torch.autograd.grad(loss.sum(), xg)
    # independent: gradient of CE(f(z), target) at the stepped point z
    z = _step_by_hand(digits_model, x, label, 0.05, 0.3, target).requires_grad_(True)
    ref_loss = F.cross_entropy(digits_model(z), target, reduction="none")
    (ref,) = torch.autograd.grad(ref_loss.sum(), z)
    assert torch.allclose(loss, ref_loss, atol=1e-5)
    assert torch.allclose(g, ref, atol=1e-6)
    assert float(g.abs().sum()) > 0


def test_c2u_surrogate_gradient(digits_model, digits_test):
    x = digits_test[0][5:10]
    with torch.no_grad():
        label = digits_model(x).argmax(1)
    xg = x.clone().requires_grad_(True)
    loss = c2u_surrogate_loss(digits_model, xg, label, lr=0.5, radius=0.3)
    (g,) = torch.autograd.grad(loss.sum(), xg)
    z = _step_by_hand(digits_model, x, label, 0.5, 0.3).requires_grad_(True)
    ref_loss = F.cross_entropy(digits_model(z), label, reduction="none")
    (ref,) = torch.autograd.grad(ref_loss.sum(), z)
    assert torch.allclose(loss, ref_loss, atol=1e-5)
    assert torch.allclose(g, ref, atol=1e-6)
    # the untargeted step raises the loss of the current label (it is an attack step)
    with torch.no_grad():
        assert bool((ref_loss > F.cross_entropy(digits_model(x), label, reduction="none")).all())
