"""KD and FitNets losses against independent computations; regressor shapes and errors."""

from __future__ import annotations

import math

import pytest
import torch

from advimage.studies.distill import build_regressor, hint_loss, kd_loss


def _manual_kl(zs: torch.Tensor, zt: torch.Tensor, tau: float) -> float:
    """Per-sample sum_k p_t (log p_t - log p_s), batch mean, in float64 with explicit softmax."""
    total = 0.0
    for s_row, t_row in zip(zs.double().tolist(), zt.double().tolist(), strict=True):
        es = [math.exp(v / tau) for v in s_row]
        et = [math.exp(v / tau) for v in t_row]
        ps = [v / sum(es) for v in es]
        pt = [v / sum(et) for v in et]
        total += sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps, strict=True))
    return total / len(zs)


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_kd_loss_matches_manual_kl_times_tau_squared(tau: float) -> None:
    g = torch.Generator().manual_seed(1)
    zs, zt = torch.randn(6, 5, generator=g) * 3, torch.randn(6, 5, generator=g) * 3
    expected = tau**2 * _manual_kl(zs, zt, tau)
    assert kd_loss(zs, zt, tau).item() == pytest.approx(expected, rel=1e-5)


def test_tau_squared_scaling_and_zero_when_equal() -> None:
    g = torch.Generator().manual_seed(2)
    zs, zt = torch.randn(4, 10, generator=g), torch.randn(4, 10, generator=g)
    # kd_loss / tau^2 is the plain KL at that temperature
    for tau in (2.0, 8.0):
        assert kd_loss(zs, zt, tau).item() / tau**2 == pytest.approx(
            _manual_kl(zs, zt, tau), rel=1e-5
        )
    assert kd_loss(zt, zt, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    # the gradient reaches the student only
    zs.requires_grad_(True)
    zt.requires_grad_(True)
    kd_loss(zs, zt).backward()
    assert zs.grad is not None and zs.grad.abs().sum() > 0 and zt.grad is None


def test_kd_loss_bad_input() -> None:
    with pytest.raises(ValueError, match="tau"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), tau=0.0)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4))


def test_hint_loss_is_half_mean_square() -> None:
    ft, fs = torch.arange(6.0).view(1, 6), torch.zeros(1, 6)
    assert hint_loss(ft, fs).item() == pytest.approx(0.5 * sum(v * v for v in range(6)) / 6)
    with pytest.raises(ValueError, match="shape"):
        hint_loss(torch.zeros(1, 6), torch.zeros(1, 5))


def test_regressor_shapes() -> None:
    conv = build_regressor((32, 8, 8), (64, 8, 8))
    out = conv.eval()(torch.rand(3, 32, 8, 8))
    assert out.shape == (3, 64, 8, 8)
    assert isinstance(conv[0], torch.nn.Conv2d) and conv[0].kernel_size == (1, 1)
    lin = build_regressor((128,), (200,))
    assert lin(torch.rand(3, 128)).shape == (3, 200)


@pytest.mark.parametrize(
    ("s", "t"), [((32, 8, 8), (64, 4, 4)), ((128,), (64, 8, 8)), ((64, 4, 4), (128,))]
)
def test_regressor_unmatchable_shapes_name_both(s: tuple, t: tuple) -> None:
    with pytest.raises(ValueError) as err:
        build_regressor(s, t)
    assert str(s) in str(err.value) and str(t) in str(err.value)
