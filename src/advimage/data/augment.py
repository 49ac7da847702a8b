"""Batched, reproducible training augmentations (the standard CIFAR recipe of He et al., 2016,
"Deep Residual Learning for Image Recognition": pad 4, random 32x32 crop, horizontal flip).

Every augmentation is a callable ``aug(x (B,C,H,W), generator) -> x`` that draws all its random
numbers from ``generator`` (same generator state -> same output) and works on the whole batch at
once: no per-sample Python loop, so it runs at tensor speed on CPU or GPU. Outputs keep the input's
dtype, device and [0, 1] range.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["ColorJitter", "Compose", "HorizontalFlip", "RandomCrop", "standard_augmentation"]

# ITU-R 601-2 luma weights, as used by PIL and torchvision for RGB -> grayscale.
_LUMA = (0.299, 0.587, 0.114)


def _check_batch(x: object, who: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{who} expects a floating (B, C, H, W) image batch, got {shape}")
    return x


def _draw_rand(n: int, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """``n`` uniforms in [0, 1) from ``generator`` (on its device), moved to ``like``'s device."""
    return torch.rand(n, generator=generator, device=generator.device).to(like.device)


class RandomCrop:
    """Pad each image by ``padding`` pixels, then crop a random ``size`` x ``size`` window.

    Args:
        size: output height and width (pixels).
        padding: pixels added on every side before cropping (so shifts lie in [-padding, padding]).
        fill: value of constant padding (in image units, [0, 1]).
        padding_mode: ``"constant"`` (fill) or ``"reflect"``.
    """

    def __init__(self, size: int, padding: int = 4, fill: float = 0.0,
                 padding_mode: str = "constant") -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"RandomCrop size must be a positive int, got {size!r}")
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"RandomCrop padding must be a non-negative int, got {padding!r}")
        if padding_mode not in ("constant", "reflect"):
            raise ValueError(f"padding_mode must be 'constant' or 'reflect', got {padding_mode!r}")
        if not 0.0 <= float(fill) <= 1.0:
            raise ValueError(f"RandomCrop fill must lie in [0, 1], got {fill!r}")
        self.size, self.padding, self.fill, self.padding_mode = size, padding, float(fill), \
            padding_mode

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = _check_batch(x, "RandomCrop")
        B, C, H, W = x.shape
        p, s = self.padding, self.size
        if s > H + 2 * p or s > W + 2 * p:
            raise ValueError(f"RandomCrop size {s} exceeds the padded image {H + 2 * p}x"
                             f"{W + 2 * p}")
        if p > 0 and self.padding_mode == "reflect" and (p >= H or p >= W):
            raise ValueError(f"reflect padding {p} must be smaller than the image size {H}x{W}")
        if p > 0:
            if self.padding_mode == "reflect":
                padded = F.pad(x, (p, p, p, p), mode="reflect")
            else:
                padded = F.pad(x, (p, p, p, p), mode="constant", value=self.fill)
        else:
            padded = x  # (B, C, H + 2p, W + 2p)
        # top-left corner of each crop, uniform over all valid positions
        top = (_draw_rand(B, generator, x) * (H + 2 * p - s + 1)).floor().long()  # (B,)
        left = (_draw_rand(B, generator, x) * (W + 2 * p - s + 1)).floor().long()  # (B,)
        # every s x s window as a strided view (no copy), then one indexed copy of the chosen ones
        windows = padded.unfold(2, s, 1).unfold(3, s, 1)  # (B, C, H+2p-s+1, W+2p-s+1, s, s)
        b = torch.arange(B, device=x.device)  # (B,)
        return windows[b, :, top, left].contiguous()  # (B, C, s, s)

    def __repr__(self) -> str:
        return (f"RandomCrop(size={self.size}, padding={self.padding}, fill={self.fill}, "
                f"padding_mode={self.padding_mode!r})")


class HorizontalFlip:
    """Mirror each image left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"HorizontalFlip p must lie in [0, 1], got {p!r}")
        self.p = float(p)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = _check_batch(x, "HorizontalFlip")
        flip = _draw_rand(x.shape[0], generator, x) < self.p  # (B,)
        return torch.where(flip[:, None, None, None], x.flip(-1), x)

    def __repr__(self) -> str:
        return f"HorizontalFlip(p={self.p})"


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` RGB -> ``(B, 1, H, W)`` luma; one-channel input is returned as is."""
    if x.shape[1] == 1:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return _LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b


class ColorJitter:
    """Randomly change brightness, contrast and saturation (as torchvision's ``ColorJitter``).

    Each factor is drawn per image uniformly in ``[max(0, 1 - v), 1 + v]``; the three operations
    are applied in a random order (drawn once per batch) and each result is clamped to [0, 1]:
    brightness ``f * x``; contrast ``f * x + (1 - f) * mean(gray(x))``; saturation
    ``f * x + (1 - f) * gray(x)`` (saturation leaves one-channel images unchanged).

    Args:
        brightness, contrast, saturation: non-negative jitter strengths ``v`` (0 disables).
    """

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0,
                 saturation: float = 0.0) -> None:
        for nm, v in (("brightness", brightness), ("contrast", contrast),
                      ("saturation", saturation)):
            if not float(v) >= 0.0:
                raise ValueError(f"ColorJitter {nm} must be >= 0, got {v!r}")
        self.brightness, self.contrast, self.saturation = (float(brightness), float(contrast),
                                                           float(saturation))

    @staticmethod
    def _factors(v: float, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        lo, hi = max(0.0, 1.0 - v), 1.0 + v
        u = _draw_rand(x.shape[0], generator, x).to(x.dtype)
        return (lo + (hi - lo) * u)[:, None, None, None]  # (B, 1, 1, 1)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = _check_batch(x, "ColorJitter")
        ops = [(op, v) for op, v in (("b", self.brightness), ("c", self.contrast),
                                     ("s", self.saturation)) if v > 0]
        if not ops:
            return x
        order = torch.randperm(len(ops), generator=generator, device=generator.device).tolist()
        for k in order:
            op, v = ops[k]
            f = self._factors(v, x, generator)
            if op == "b":
                x = (f * x).clamp(0.0, 1.0)
            elif op == "c":
                mean = _grayscale(x).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
                x = (f * x + (1 - f) * mean).clamp(0.0, 1.0)
            elif x.shape[1] != 1:
                x = (f * x + (1 - f) * _grayscale(x)).clamp(0.0, 1.0)
        return x

    def __repr__(self) -> str:
        return (f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation})")


class Compose:
    """Apply augmentations in sequence, all drawing from the same generator."""

    def __init__(self, transforms: Sequence[Callable[[torch.Tensor, torch.Generator],
                                                     torch.Tensor]]) -> None:
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise ValueError(f"Compose expects callables, got {type(t).__name__}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for t in self.transforms:
            x = t(x, generator)
        return x

    def __repr__(self) -> str:
        return f"Compose([{', '.join(map(repr, self.transforms))}])"


def standard_augmentation(name: str, image_size: int | None = None) -> Compose:
    """The usual training augmentation for dataset ``name``.

    * ``cifar10``: random crop 32 with 4-pixel zero padding + horizontal flip (He et al., 2016).
    * ``mnist``: random crop 28 with 2-pixel padding (digits must not be mirrored).
    * ``digits``: random crop 8 with 1-pixel padding (the 8x8 images tolerate one pixel).
    * ``folder``: horizontal flip, plus a crop padded by 1/8 of ``image_size`` when it is given.
    """
    key = str(name).lower()
    if key == "cifar10":
        return Compose([RandomCrop(image_size or 32, padding=4), HorizontalFlip(0.5)])
    if key == "mnist":
        return Compose([RandomCrop(image_size or 28, padding=2)])
    if key == "digits":
        return Compose([RandomCrop(image_size or 8, padding=1)])
    if key == "folder":
        if image_size is None:
            return Compose([HorizontalFlip(0.5)])
        return Compose([RandomCrop(image_size, padding=max(1, image_size // 8)),
                        HorizontalFlip(0.5)])
    raise ValueError(f"no standard augmentation for dataset {name!r}; "
                     "choose one of: cifar10, digits, folder, mnist")
