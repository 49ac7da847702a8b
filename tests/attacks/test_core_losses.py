"""Attack losses against per-sample reference computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from advimage.attacks.losses import ce_loss, dlr_loss, get_loss, is_success, margin_loss


def _logits(seed: int = 0, b: int = 7, k: int = 6) -> torch.Tensor:
    return torch.randn(b, k, generator=torch.Generator().manual_seed(seed)) * 3


def _ref_margin(z: list[float], label: int) -> float:
    return max(v for j, v in enumerate(z) if j != label) - z[label]


def test_ce_untargeted_and_targeted() -> None:
    z, y = _logits(), torch.tensor([0, 1, 2, 3, 4, 5, 0])
    t = (y + 1) % 6
    torch.testing.assert_close(ce_loss(z, y), F.cross_entropy(z, y, reduction="none"))
    torch.testing.assert_close(ce_loss(z, y, t), -F.cross_entropy(z, t, reduction="none"))


def test_margin_against_python_reference() -> None:
    z, y = _logits(1), torch.tensor([5, 4, 3, 2, 1, 0, 2])
    t = (y + 2) % 6
    rows = z.tolist()
    expect_u = [_ref_margin(r, int(c)) for r, c in zip(rows, y, strict=True)]
    expect_t = [-_ref_margin(r, int(c)) for r, c in zip(rows, t, strict=True)]
    assert margin_loss(z, y).tolist() == pytest.approx(expect_u, abs=1e-5)
    assert margin_loss(z, y, t).tolist() == pytest.approx(expect_t, abs=1e-5)
    # positive exactly when the attack succeeded
    assert torch.equal(margin_loss(z, y) > 0, is_success(z, y))
    assert torch.equal(margin_loss(z, y, t) > 0, is_success(z, y, t))
    assert get_loss("cw") is margin_loss


def test_dlr_against_python_reference() -> None:
    z, y = _logits(2), torch.tensor([0, 2, 4, 1, 3, 5, 5])
    t = (y + 1) % 6
    for row, c, tc, got_u, got_t in zip(
        z.tolist(), y.tolist(), t.tolist(), dlr_loss(z, y), dlr_loss(z, y, t), strict=True
    ):
        s = sorted(row, reverse=True)
        expect_u = -(row[c] - max(v for j, v in enumerate(row) if j != c)) / (s[0] - s[2])
        expect_t = -(row[c] - row[tc]) / (s[0] - 0.5 * (s[2] + s[3]))
        assert float(got_u) == pytest.approx(expect_u, rel=1e-5)
        assert float(got_t) == pytest.approx(expect_t, rel=1e-5)


def test_dlr_is_shift_and_scale_invariant() -> None:
    z, y = _logits(3), torch.arange(7) % 6
    t = (y + 3) % 6
    for target in (None, t):
        base = dlr_loss(z, y, target)
        torch.testing.assert_close(dlr_loss(5.0 * z - 2.0, y, target), base)


def test_dlr_needs_enough_classes_and_unknown_loss_raises() -> None:
    z = torch.randn(2, 3)
    y = torch.tensor([0, 1])
    dlr_loss(z, y)  # 3 classes are enough untargeted
    with pytest.raises(ValueError, match="4 classes"):
        dlr_loss(z, y, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="ce"):
        get_loss("hinge")
