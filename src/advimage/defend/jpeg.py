"""JPEG compression defense (Dziugaite, Ghahramani & Roy, 2016, "A study of the effect of JPG
compression on adversarial images"; Guo et al., 2018, "Countering Adversarial Images using
Input Transformations").

Each image is JPEG-encoded at ``quality`` and decoded (PIL, per image) before the classifier.
The codec has no gradient, so the defense is non-differentiable: without BPDA its output is
joined to the input with a zero gradient (plain gradient attacks see nothing, the masked
model of Athalye, Carlini & Wagner, 2018); ``bpda: true`` backpropagates through the identity
surrogate (:class:`advimage.attacks.bpda.BPDA`), since ``jpeg(x) ~ x``.

The worked example of "a new defense is one file and one registry line": this file, and
``import advimage.defend.jpeg`` in ``advimage/defend/__init__.py``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from advimage.attacks.bpda import BPDA
from advimage.defend.base import Defense, TransformDefense
from advimage.defend.registry import defense_options, register_defense

__all__ = ["build_jpeg", "jpeg_compress"]


def _roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """One uint8 image ``(H, W)`` or ``(H, W, 3)`` through a JPEG encode/decode."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as decoded:
        return np.asarray(decoded.convert("L" if image.ndim == 2 else "RGB"))


def jpeg_compress(x: Tensor, quality: int) -> Tensor:
    """Images ``(B, C, H, W)`` in [0, 1] (C = 1 or 3) after a JPEG round trip at ``quality``.

    Returns a tensor of ``x``'s shape, dtype and device, without autograd history.
    """
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"jpeg: images must be (B, 1 or 3, H, W), got {tuple(x.shape)}")
    pixels = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()  # (B, C, H, W)
    hwc = pixels.permute(0, 2, 3, 1).numpy()  # (B, H, W, C)
    out = [_roundtrip(img[..., 0] if img.shape[-1] == 1 else img, quality) for img in hwc]
    back = torch.from_numpy(np.stack(out)).reshape(hwc.shape).permute(0, 3, 1, 2)
    return (back.float() / 255).to(device=x.device, dtype=x.dtype)  # (B, C, H, W)


@register_defense("jpeg")
def build_jpeg(model: nn.Module, options: Mapping[str, Any]) -> Defense:
    """JPEG compression before ``model``: options ``quality`` (int 1-100, default 75), ``bpda``.

    Deterministic and non-differentiable; ``bpda: true`` gives identity-surrogate gradients.
    """
    o = defense_options("jpeg", options, {"quality": 75, "bpda": False})
    quality = o["quality"]
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"jpeg: quality must be an int in [1, 100], got {quality!r}")
    if not isinstance(o["bpda"], bool):
        raise ValueError(f"jpeg: bpda must be true or false, got {o['bpda']!r}")

    def compress(x: Tensor) -> Tensor:
        return jpeg_compress(x, quality)  # (B, C, H, W)

    def masked(x: Tensor) -> Tensor:
        return compress(x) + 0.0 * x  # the codec's value, a zero gradient

    transform: Callable[[Tensor], Tensor] = BPDA(compress) if o["bpda"] else masked
    return TransformDefense(model, transform, is_randomized=False, is_differentiable=False,
                            uses_bpda=o["bpda"])
