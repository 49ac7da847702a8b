"""Batched augmentations against independent per-sample reference computations."""

from __future__ import annotations

import pytest
import torch

from advimage.data import ColorJitter, Compose, HorizontalFlip, RandomCrop
from advimage.data.augment import standard_augmentation


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture()
def x() -> torch.Tensor:
    return torch.rand(16, 3, 12, 12)


@pytest.mark.parametrize(("aug", "side"), [
    (RandomCrop(12, padding=3), 12), (RandomCrop(8, padding=0), 8),
    (RandomCrop(12, 2, padding_mode="reflect"), 12), (HorizontalFlip(), 12),
    (ColorJitter(0.4, 0.4, 0.4), 12),
    (Compose([RandomCrop(10, 2), HorizontalFlip(), ColorJitter(0.2, 0.3, 0.1)]), 10),
])
def test_shape_range_dtype_and_reproducibility(aug, side: int, x: torch.Tensor) -> None:
    out = aug(x, _gen(1))
    assert out.shape == (16, 3, side, side)
    assert out.dtype == x.dtype and 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert torch.equal(out, aug(x, _gen(1)))  # same generator state -> same output
    assert not torch.equal(out, aug(x, _gen(2)))  # another state -> other draws
    x64 = x.double()
    assert aug(x64, _gen(1)).dtype == torch.float64


def _reference_crop(img: torch.Tensor, size: int, pad: int, dy: int, dx: int) -> torch.Tensor:
    """Crop with the window's top-left at (dy, dx) in the zero-padded image, pixel by pixel."""
    C, H, W = img.shape
    out = torch.zeros(C, size, size)
    for i in range(size):
        for j in range(size):
            yy, xx = dy + i - pad, dx + j - pad
            if 0 <= yy < H and 0 <= xx < W:
                out[:, i, j] = img[:, yy, xx]
    return out


def test_random_crop_matches_a_shift_within_padding() -> None:
    torch.manual_seed(1)
    imgs = torch.rand(64, 2, 9, 9) * 0.9 + 0.1  # strictly positive, so zero padding is visible
    pad, size = 3, 9
    out = RandomCrop(size, padding=pad)(imgs, _gen(7))
    seen = set()
    for b in range(len(imgs)):
        matches = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                   if torch.equal(out[b], _reference_crop(imgs[b], size, pad, dy, dx))]
        assert len(matches) == 1, f"sample {b} is not one padded shift within {pad}"
        seen.add(matches[0])
    assert len(seen) > 20  # offsets spread over the (2p+1)^2 = 49 possibilities


def test_random_crop_reflect_and_fill() -> None:
    img = torch.rand(4, 1, 6, 6)
    out = RandomCrop(6, padding=2, padding_mode="reflect")(img, _gen(0))
    padded = torch.nn.functional.pad(img, (2, 2, 2, 2), mode="reflect")
    for b in range(4):
        assert any(torch.equal(out[b], padded[b, :, dy:dy + 6, dx:dx + 6])
                   for dy in range(5) for dx in range(5))
    filled = RandomCrop(6, padding=6, fill=1.0)(torch.zeros(32, 1, 6, 6), _gen(0))
    assert set(filled.unique().tolist()) <= {0.0, 1.0} and float(filled.max()) == 1.0


def test_flip_probabilities(x: torch.Tensor) -> None:
    assert torch.equal(HorizontalFlip(1.0)(x, _gen()), x.flip(-1))
    assert torch.equal(HorizontalFlip(0.0)(x, _gen()), x)
    big = torch.rand(2000, 1, 2, 3)
    out = HorizontalFlip(0.5)(big, _gen())
    flipped = (out == big.flip(-1)).flatten(1).all(1)
    kept = (out == big).flatten(1).all(1)
    assert bool((flipped | kept).all()) and 0.45 < float(flipped.float().mean()) < 0.55


def test_color_jitter_identity_and_reference(x: torch.Tensor) -> None:
    assert torch.equal(ColorJitter()(x, _gen()), x)
    assert torch.allclose(ColorJitter(0.0, 0.0, 0.0)(x, _gen(3)), x)
    # brightness only: out = clamp(f * x) with one factor per image in [0.5, 1.5]
    out = ColorJitter(brightness=0.5)(x, _gen(4))
    for b in range(len(x)):
        inside = (x[b] > 0.05) & (out[b] < 0.999)
        f = (out[b][inside] / x[b][inside])
        assert float(f.std()) < 1e-5 and 0.5 <= float(f.mean()) <= 1.5
    # saturation only: out = f * x + (1 - f) * gray(x), one f per image in [0.5, 1.5]
    img = 0.4 + 0.2 * torch.rand(8, 3, 5, 5)  # mid-range: never clamps
    out = ColorJitter(saturation=0.5)(img, _gen(9))
    gray = (0.299 * img[:, 0] + 0.587 * img[:, 1] + 0.114 * img[:, 2])[:, None]  # (B, 1, H, W)
    d_in, d_out = (img - gray).flatten(1), (out - gray).flatten(1)
    f = (d_in * d_out).sum(1) / (d_in * d_in).sum(1)  # least-squares factor per image
    assert torch.allclose(d_out, f[:, None] * d_in, atol=1e-5)
    assert bool(((f >= 0.5 - 1e-5) & (f <= 1.5 + 1e-5)).all()) and float(f.std()) > 0.01


def test_contrast_preserves_luma_mean_when_unclamped() -> None:
    img = 0.4 + 0.2 * torch.rand(8, 3, 5, 5)  # mid-range: contrast in [0.5, 1.5] never clamps
    out = ColorJitter(contrast=0.5)(img, _gen(2))
    luma = lambda t: (0.299 * t[:, 0] + 0.587 * t[:, 1] + 0.114 * t[:, 2]).mean((1, 2))  # noqa: E731
    assert torch.allclose(luma(out), luma(img), atol=1e-5)
    assert not torch.allclose(out, img)


def test_standard_augmentations_and_errors() -> None:
    x = torch.rand(4, 3, 32, 32)
    out = standard_augmentation("cifar10")(x, _gen())
    assert out.shape == x.shape
    assert standard_augmentation("mnist")(torch.rand(2, 1, 28, 28), _gen()).shape == (2, 1, 28, 28)
    assert standard_augmentation("digits")(torch.rand(2, 1, 8, 8), _gen()).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="standard augmentation"):
        standard_augmentation("nope")
    with pytest.raises(ValueError, match="exceeds"):
        RandomCrop(40, padding=2)(x, _gen())
    with pytest.raises(ValueError, match="B, C, H, W"):
        HorizontalFlip()(torch.rand(3, 32, 32), _gen())
    with pytest.raises(ValueError, match="brightness"):
        ColorJitter(brightness=-1)
    with pytest.raises(ValueError, match="p must"):
        HorizontalFlip(1.5)
