"""Numerical core of the cache model: per-class log-sum-exp vs. an independent float64 NumPy
computation, stability at large theta, gradients, top-k path and the log-space mixture."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from advimage.defend.cache.ops import class_log_sum_exp, mix_log_probs, topk_class_log_sum_exp


def _np_class_lse(q: np.ndarray, keys: np.ndarray, labels: np.ndarray, theta: float, k: int):
    """Reference: float64, max-shifted, one class at a time."""
    sims = q @ keys.T  # (B, N)
    out = np.full((q.shape[0], k), -np.inf)
    for c in range(k):
        s = theta * sims[:, labels == c]
        if s.shape[1]:
            m = s.max(axis=1, keepdims=True)
            out[:, c] = (m + np.log(np.exp(s - m).sum(axis=1, keepdims=True)))[:, 0]
    return out


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=1)


@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_class_lse_matches_numpy_for_every_chunk_size(chunk):
    q, keys = _unit(6, 12, 0), _unit(150, 12, 1).half()
    labels = torch.randint(0, 3, (150,), generator=torch.Generator().manual_seed(2))
    labels[labels == 2] = 1  # class 2 absent, class 3 never used either
    thetas = [0.5, 10.0, 100.0]
    got = class_log_sum_exp(q.double(), keys, labels, thetas, 4, key_chunk=chunk)
    assert got.shape == (3, 6, 4)
    for t, theta in enumerate(thetas):
        ref = _np_class_lse(q.double().numpy(), keys.double().numpy(), labels.numpy(), theta, 4)
        np.testing.assert_allclose(got[t, :, :2].numpy(), ref[:, :2], rtol=1e-12, atol=1e-10)
        assert torch.isneginf(got[t, :, 2:]).all()


def test_large_theta_is_finite_in_float32_and_gradients_are_exact():
    # theta = 100 with opposite-sign similarities: exp(+-100) overflows/underflows in float32.
    q = _unit(4, 8, 3).requires_grad_()
    keys = torch.cat([_unit(20, 8, 4), -_unit(20, 8, 4)]).half()
    labels = torch.arange(40) % 2
    lse = class_log_sum_exp(q, keys, labels, [100.0], 2, key_chunk=9)[0]  # (4, 2)
    assert torch.isfinite(lse).all()
    lse.sum().backward()
    assert torch.isfinite(q.grad).all()
    # Independent float64 autograd reference of the same quantity.
    q64 = q.detach().double().requires_grad_()
    sims = 100.0 * q64 @ keys.double().T
    ref = torch.stack([torch.logsumexp(sims[:, labels == c], dim=1) for c in range(2)], 1)
    ref.sum().backward()
    torch.testing.assert_close(lse.double(), ref.detach(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(q.grad.double(), q64.grad, rtol=1e-4, atol=1e-3)


def test_grad_mode_uses_checkpointing_and_equals_no_grad_values():
    q, keys = _unit(5, 16, 5), _unit(300, 16, 6).half()
    labels = torch.arange(300) % 5
    with torch.no_grad():
        plain = class_log_sum_exp(q, keys, labels, [20.0], 5, key_chunk=50)
    qg = q.clone().requires_grad_()
    with_grad = class_log_sum_exp(qg, keys, labels, [20.0], 5, key_chunk=50)
    torch.testing.assert_close(with_grad.detach(), plain)
    with_grad[0, torch.arange(5), torch.arange(5)].sum().backward()
    assert qg.grad.abs().sum() > 0


def test_topk_path_equals_exact_when_k_covers_every_key():
    q, keys = _unit(4, 10, 7), _unit(30, 10, 8).half()
    labels = torch.arange(30) % 3
    idx = torch.arange(30).repeat(4, 1)[:, torch.randperm(30)]  # every key, shuffled
    idx[:, -3:] = -1  # padding entries are ignored...
    kept = idx[:, :-3]
    exact = class_log_sum_exp(q, keys, labels, [30.0], 3)
    topk = topk_class_log_sum_exp(q, keys, labels, idx, [30.0], 3)
    # ...so compare with the exact sum over the kept keys only.
    ref = np.stack([_np_class_lse(q[i:i + 1].double().numpy(), keys[kept[i]].double().numpy(),
                                  labels[kept[i]].numpy(), 30.0, 3)[0] for i in range(4)])
    np.testing.assert_allclose(topk[0].numpy(), ref, rtol=1e-5, atol=1e-4)
    full = topk_class_log_sum_exp(q, keys, labels, torch.arange(30).repeat(4, 1), [30.0], 3)
    torch.testing.assert_close(full, exact, rtol=1e-5, atol=1e-4)


def test_topk_absent_class_is_neg_inf_with_finite_gradient():
    q, keys = _unit(2, 6, 9).requires_grad_(), _unit(10, 6, 10).half()
    labels = torch.tensor([0] * 5 + [1] * 5)
    idx = torch.tensor([[0, 1, 2], [3, 4, -1]])  # only class-0 candidates
    lse = topk_class_log_sum_exp(q, keys, labels, idx, [50.0], 2)[0]
    assert torch.isneginf(lse[:, 1]).all() and torch.isfinite(lse[:, 0]).all()
    logp = lse - torch.logsumexp(lse, 1, keepdim=True)
    F.nll_loss(logp.clamp_min(-1e4), torch.tensor([0, 0])).backward()
    assert torch.isfinite(q.grad).all()


def test_mixture_in_log_space():
    a = torch.log_softmax(torch.randn(3, 4, dtype=torch.float64), 1)
    b = torch.log_softmax(torch.randn(3, 4, dtype=torch.float64), 1)
    assert mix_log_probs(a, b, 0.0) is a and mix_log_probs(a, b, 1.0) is b
    got = mix_log_probs(a, b, 0.3).exp()
    torch.testing.assert_close(got, 0.7 * a.exp() + 0.3 * b.exp())
    assert math.isclose(float(got.sum()), 3.0, rel_tol=1e-12)
