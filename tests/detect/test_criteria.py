"""Batched criteria vs plain per-image loops written from the official algorithm."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detect_reference import official_steps
from torch import nn

from advimage.detect import draw_noise, random_targets, softmax_l1_change, steps_to_flip


class RowCounter(nn.Module):
    """Counts the rows the wrapped model evaluates."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.rows = net, 0

    def forward(self, x):
        self.rows += len(x)
        return self.net(x)


def _labels(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def test_steps_match_official_loop(digits_model, digits_test):
    x = digits_test[0][:24]
    label = _labels(digits_model, x)
    gen = torch.Generator().manual_seed(3)
    target = random_targets(label, 10, gen)
    for tgt, lr, cap in ((target, 0.005, 30), (None, 0.5, 30)):
        got = steps_to_flip(digits_model, x, label, lr=lr, radius=0.5, cap=cap, target=tgt)
        want = [
            official_steps(digits_model, x[i : i + 1], int(label[i]), lr, 0.5, cap,
                           None if tgt is None else int(tgt[i]))
            for i in range(len(x))
        ]
        assert got.tolist() == want
        assert 0 < len(set(want)) and min(want) >= 1  # label = prediction: never 0 steps
    # untargeted with this cap has both flipped and capped samples, so both paths ran
    assert 30 in want and min(want) < 30


def test_active_set_compaction_rows(digits_model, digits_test):
    x = digits_test[0][:32]
    label = _labels(digits_model, x)
    counter = RowCounter(digits_model)
    cap = 25
    counts = steps_to_flip(counter, x, label, lr=0.5, radius=0.5, cap=cap,
                           stop_at_fixed_point=False)
    # a sample that flips at x_k was evaluated at x_0..x_k; a capped one at x_0..x_{cap-1}
    expected = sum(c + 1 if c < cap else cap for c in counts.tolist())
    assert counter.rows == expected
    assert expected < cap * len(x)


class Constant(nn.Module):
    """Logits that ignore the input: the gradient is zero, so no step ever moves."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([2.0, 0.0, -1.0]))
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.bias.expand(len(x), 3) + self.w * x.flatten(1).sum(1, keepdim=True)


def test_fixed_point_exit():
    x = torch.rand(5, 1, 4, 4)
    label = torch.zeros(5, dtype=torch.long)
    model = RowCounter(Constant())
    counts = steps_to_flip(model, x, label, lr=1.0, radius=0.5, cap=50)
    assert counts.tolist() == [50] * 5
    assert model.rows == 5  # one pass showed no step moves anything
    model.rows = 0
    counts = steps_to_flip(model, x, label, lr=1.0, radius=0.5, cap=50, stop_at_fixed_point=False)
    assert counts.tolist() == [50] * 5 and model.rows == 250


def test_softmax_l1_change_matches_per_image(digits_model, digits_test):
    x = digits_test[0][:10]
    noise = draw_noise(x, 0.05, 3, torch.Generator().manual_seed(0))  # (3, 10, 1, 8, 8)
    assert noise.shape == (3, *x.shape)
    assert abs(float(noise.std()) - 0.05) < 0.01
    with torch.no_grad():
        got = softmax_l1_change(digits_model, x, noise)
        for i in range(len(x)):
            p = F.softmax(digits_model(x[i : i + 1]), 1)
            vals = [
                torch.norm(F.softmax(digits_model(x[i : i + 1] + noise[k, i : i + 1]), 1) - p, 1)
                for k in range(3)
            ]
            assert torch.allclose(got[i], torch.stack(vals).mean(), atol=1e-6)
        single = softmax_l1_change(digits_model, x, noise[0])
        assert torch.allclose(single, softmax_l1_change(digits_model, x, noise[:1]))


def test_softmax_l1_change_gradcheck():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x = torch.rand(2, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    noise = 0.1 * torch.randn(2, 2, 2, 2, 2, dtype=torch.float64)
    # L1 is non-smooth only where a softmax difference is exactly 0: not at random points
    assert torch.autograd.gradcheck(lambda z: softmax_l1_change(model, z, noise), (x,))


def test_random_targets_differ_and_cover():
    labels = torch.arange(10).repeat(100)
    t = random_targets(labels, 10, torch.Generator().manual_seed(0))
    assert bool((t != labels).all()) and t.min() >= 0 and t.max() <= 9
    # every other class is drawn for label 0 (uniform over 9 classes, 100 draws)
    assert set(t[labels == 0].tolist()) == set(range(1, 10))


def test_cap_one_is_a_single_forward(digits_model, digits_test):
    x = digits_test[0][:6]
    label = _labels(digits_model, x)
    wrong = (label + 1) % 10
    counter = RowCounter(digits_model)
    counts = steps_to_flip(counter, x, torch.cat([label[:3], wrong[3:]]), lr=0.5, radius=0.5,
                           cap=1)
    assert counts.tolist() == [1, 1, 1, 0, 0, 0] and counter.rows == 6


def test_capped_rows_skip_the_last_backward(digits_model, digits_test):
    x = digits_test[0][:32]
    label = _labels(digits_model, x)
    calls: list[bool] = []  # grad mode of every forward pass
    handle = digits_model.register_forward_hook(
        lambda m, i, o: calls.append(torch.is_grad_enabled())
    )
    try:
        counts = steps_to_flip(digits_model, x, label, lr=0.5, radius=0.5, cap=25,
                               stop_at_fixed_point=False)
    finally:
        handle.remove()
    # capped rows exist, so the loop ran 24 gradient passes and one plain forward at x_24
    assert 25 in counts.tolist() and len(calls) == 25
    assert all(calls[:-1]) and calls[-1] is False
