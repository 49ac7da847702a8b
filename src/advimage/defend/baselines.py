"""The baseline defenses of every run: ``none``, ``quantize`` and ``gaussian-noise``.

``quantize`` is the classic masked model (Xu, Evans & Qi, 2018, "Feature Squeezing"): plain
gradient attacks see nothing, BPDA (Athalye, Carlini & Wagner, 2018) sees through it.
``gaussian-noise`` is randomized (Cohen et al., 2019, randomized smoothing's noise) and must be
attacked with EOT. ``none`` is the undefended model, the baseline column of every table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from advimage.attacks.bpda import BPDA
from advimage.defend.base import Defense, TransformDefense
from advimage.defend.registry import defense_options, register_defense

__all__ = ["NoDefense", "build_gaussian_noise", "build_none", "build_quantize"]


class NoDefense(Defense):
    """The undefended classifier as a :class:`Defense`: ``forward`` is ``model(x)``.

    Deterministic, differentiable, no BPDA. Attribute reads it does not answer
    (``fingerprint``, ``arch``, ``classes``, ``num_classes``, ``input_shape``, ...) pass
    through to the wrapped model, so whatever fingerprints or describes the defended model
    sees the classifier itself; its parameters are the model's.

    Args:
        model: the classifier (images in [0, 1] -> logits).
    """

    is_randomized = False
    is_differentiable = True
    uses_bpda = False

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("model")
            if inner is None or name.startswith("__"):  # half-built, or copy/pickle hooks
                raise
            return getattr(inner, name)

    def forward(self, x: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` in [0, 1] -> the classifier's logits ``(B, K)``."""
        return self.model(x)  # (B, K)


@register_defense("none")
def build_none(model: nn.Module, options: Mapping[str, Any]) -> Defense:
    """The undefended model (the baseline column of every table); no options."""
    defense_options("none", options, {})
    return NoDefense(model)


@register_defense("quantize")
def build_quantize(model: nn.Module, options: Mapping[str, Any]) -> Defense:
    """Bit-depth reduction (Xu, Evans & Qi, 2018, "Feature Squeezing").

    ``round`` has zero gradient almost everywhere, so plain gradient attacks see nothing: the
    classic masked model. Options: ``bits`` (1-8, default 3); ``bpda: true`` restores
    gradients with an identity surrogate.
    """
    o = defense_options("quantize", options, {"bits": 3, "bpda": False})
    bits = o["bits"]
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"quantize: bits must be an int in [1, 8], got {bits!r}")
    levels = float(2**bits - 1)

    def squeeze(x: Tensor) -> Tensor:
        return torch.round(x * levels) / levels  # (B, C, H, W), 2**bits grey levels

    transform: Callable[[Tensor], Tensor] = BPDA(squeeze) if o["bpda"] else squeeze
    return TransformDefense(model, transform, is_randomized=False, is_differentiable=False,
                            uses_bpda=bool(o["bpda"]))


@register_defense("gaussian-noise")
def build_gaussian_noise(model: nn.Module, options: Mapping[str, Any]) -> Defense:
    """Random Gaussian input noise (as in randomized smoothing, Cohen et al., 2019).

    A randomized defense: it must be attacked with EOT (``options: {eot: 10}`` on attacks).
    Option ``sigma`` (> 0, pixel units on [0, 1], default 0.1).
    """
    o = defense_options("gaussian-noise", options, {"sigma": 0.1})
    sigma = float(o["sigma"])  # pixel units on [0, 1]
    if not sigma > 0:
        raise ValueError(f"gaussian-noise: sigma must be > 0, got {o['sigma']!r}")

    def noise(x: Tensor) -> Tensor:
        return (x + sigma * torch.randn_like(x)).clamp(0.0, 1.0)  # (B, C, H, W)

    return TransformDefense(model, noise, is_randomized=True, is_differentiable=True,
                            uses_bpda=False)
