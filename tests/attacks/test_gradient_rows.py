"""Gradient passes in slices of ``GRADIENT_ROWS`` rows give the one-pass numbers, bit for bit.

:func:`advimage.attacks.gradient.input_gradient` runs a batch above ``max_rows`` in slices when the
objective takes its per-row tensors (``per_row``), and FAB linearises in the same slices. A frozen
model's rows are independent, so the gradient, loss and logits must equal one pass over the whole
batch exactly; APGD on more rows than a slice must still be the reference's (``pyautoattack``).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advimage.attacks.apgd import APGD
from advimage.attacks.fab import FAB
from advimage.attacks.gradient import GRADIENT_ROWS, input_gradient
from advimage.attacks.losses import ce_loss, dlr_loss
from advimage.models.small_cnn import LeNet5


def _lenet(n: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = LeNet5().eval().requires_grad_(False)
    x = torch.rand(n, 1, 28, 28)
    return model, x, torch.randint(0, 10, (n,))


@pytest.mark.parametrize("max_rows", [GRADIENT_ROWS, 50, 40])
@pytest.mark.parametrize("targeted", [False, True])
def test_slices_are_one_pass_bit_for_bit(max_rows, targeted) -> None:
    model, x, y = _lenet(150)  # 150 rows: two full slices of 64 and a partial one
    target = (y + 1) % 10 if targeted else None
    one = input_gradient(model, x, lambda z: ce_loss(z, y, target))
    sliced = input_gradient(model, x, ce_loss, per_row=(y, target), max_rows=max_rows)
    for a, b in zip(one, sliced, strict=True):
        assert a.shape == b.shape
        assert torch.equal(a, b)
    assert one[0].abs().sum() > 0  # a real gradient, not zeros on both sides


def test_slices_with_eot_average_the_same_passes(trained_digits) -> None:
    x, y = trained_digits.x[:150], trained_digits.y[:150]
    objective = lambda z, yy: dlr_loss(z, yy)  # noqa: E731
    one = input_gradient(trained_digits.model, x, lambda z: objective(z, y), eot=3)
    sliced = input_gradient(trained_digits.model, x, objective, eot=3, per_row=(y,), max_rows=40)
    for a, b in zip(one, sliced, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("aim", [False, True])
def test_fab_linearises_in_slices_bit_for_bit(aim) -> None:
    model, x, y = _lenet(GRADIENT_ROWS + 36)
    target = (y + 3) % 10 if aim else None
    df, dg = FAB._linearise(model, x, y, target)
    df1, dg1 = FAB._linearise_rows(model, x, y, target)  # one pass
    assert dg.shape == (len(x), 1 if aim else 10, 28 * 28)
    assert torch.equal(df, df1)
    assert torch.equal(dg, dg1)


def test_an_objective_without_per_row_tensors_slices_too() -> None:
    model, x, _ = _lenet(150)
    objective = lambda z: -z.logsumexp(1)  # noqa: E731
    one = input_gradient(model, x, objective)
    sliced = input_gradient(model, x, objective, per_row=())
    for a, b in zip(one, sliced, strict=True):
        assert torch.equal(a, b)


def test_a_per_row_tensor_of_another_length_is_one_clear_error() -> None:
    model, x, y = _lenet(10)
    with pytest.raises(ValueError, match=r"per_row\[0\] has shape \(9,\), expected 10 rows"):
        input_gradient(model, x, ce_loss, per_row=(y[:9], None))


def test_an_objective_that_is_not_per_sample_is_one_clear_error() -> None:
    model, x, y = _lenet(10)
    with pytest.raises(ValueError, match=r"returned shape \(\); it must return one loss per"):
        input_gradient(model, x, lambda z: ce_loss(z, y).sum())


def test_max_rows_below_one_is_rejected() -> None:
    model, x, y = _lenet(4)
    with pytest.raises(ValueError, match="max_rows"):
        input_gradient(model, x, ce_loss, per_row=(y, None), max_rows=0)


@pytest.mark.peers
def test_apgd_above_one_slice_is_the_references(trained_digits) -> None:
    """APGD-CE on 150 digits (three slices per pass) against ``pyautoattack``'s single run."""
    ref_mod = pytest.importorskip("pyautoattack.autopgd_base", reason="pyautoattack missing")
    td = trained_digits
    with torch.no_grad():
        keep = td.model(td.x).argmax(1) == td.y
    x, y = td.x[keep][:150], td.y[keep][:150]
    assert len(x) > 2 * GRADIENT_ROWS
    ref = ref_mod.APGDAttack(td.model, norm="Linf", eps=0.1, n_iter=100, seed=0, device=x.device)
    ref.init_hyperparam(x)
    torch.manual_seed(0)
    x_best, acc, loss_best, _ = ref.attack_single_run(x, y)
    robust = acc.bool()
    ours = APGD(eps=0.1, norm="linf", steps=100, early_stop=False, loss="ce")
    x_adv, success, loss = ours._single_run(td.model, x, y, None, None,
                                            torch.Generator().manual_seed(0))
    assert 0 < int(success.sum()) < len(x)
    assert torch.equal(success, ~robust)
    assert torch.equal(x_adv[robust], x_best[robust])
    assert torch.equal(loss[robust], loss_best[robust])
