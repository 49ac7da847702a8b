"""The channels-last working copy: the same attack, returned in the caller's memory layout."""

from __future__ import annotations

import torch
from torch import nn

from advimage.attacks import create_attack


def _rgb_cnn() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 10),
    ).eval()


def test_channels_last_is_internal_and_equivalent() -> None:
    model = _rgb_cnn()
    x = torch.rand(32, 3, 16, 16)
    y = model(x).argmax(1)
    kw = dict(eps=8 / 255, steps=3, random_start=False, early_stop=False)
    fast = create_attack("pgd", **kw)  # channels_last=None: on, on the CPU
    plain = create_attack("pgd", **kw, channels_last=False)
    a, b = fast(model, x, y), plain(model, x, y)
    assert a.is_contiguous() and b.is_contiguous()
    # identical steps; only rounding inside the convolutions may flip a near-zero gradient sign
    assert (a != b).float().mean() < 0.01
    xc = x.contiguous(memory_format=torch.channels_last)
    out = fast(model, xc, y)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    torch.testing.assert_close(out.contiguous(), a)
