"""The defense registry that run configs plug into by name (detectors: advimage.detect.registry).

A *defense builder* is ``builder(model, options) -> nn.Module``: the returned module is the
defended classifier the attacks see (images in [0, 1] -> logits). It may declare
``is_randomized`` (attack it with EOT) and ``is_differentiable`` (else attack it through BPDA,
then set ``uses_bpda``); the gradient-masking checks read these attributes (Athalye, Carlini &
Wagner, 2018, "Obfuscated Gradients Give a False Sense of Security").

Capabilities register their own builders (``@register_defense("cache")``) in their modules;
this module ships the baselines ``none``, ``quantize``, ``gaussian-noise``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from advimage.attacks.bpda import BPDA
from advimage.registry import Registry

__all__ = [
    "DEFENSES",
    "DefendedModel",
    "build_defense",
    "defense_flags",
    "list_defenses",
    "register_defense",
]

DefenseBuilder = Callable[[nn.Module, Mapping[str, Any]], nn.Module]
DEFENSES: Registry[DefenseBuilder] = Registry("defense")


def register_defense(name: str) -> Callable[[DefenseBuilder], DefenseBuilder]:
    """Decorator: register a defense builder ``(model, options) -> nn.Module`` under ``name``."""
    return DEFENSES.register(name)  # type: ignore[return-value]


def _load_plugins() -> None:
    """Import the capability packages so their ``register_*`` decorators have run."""
    import advimage.defend  # noqa: F401


def list_defenses() -> list[str]:
    _load_plugins()
    return DEFENSES.names()


def build_defense(name: str, model: nn.Module, options: Mapping[str, Any]) -> nn.Module:
    """The defended model for defense ``name`` (``ValueError`` for unknown names/options)."""
    _load_plugins()
    out = DEFENSES.get(name)(model, dict(options))
    if not isinstance(out, nn.Module):
        raise ValueError(f"defense {name!r} must build an nn.Module, got {type(out).__name__}")
    return out


def defense_flags(model: nn.Module) -> dict[str, bool]:
    """``is_randomized`` / ``is_differentiable`` / ``uses_bpda`` of a (defended) model."""
    return {
        "is_randomized": bool(getattr(model, "is_randomized", False)),
        "is_differentiable": bool(getattr(model, "is_differentiable", True)),
        "uses_bpda": bool(getattr(model, "uses_bpda", False)),
    }


def _options(name: str, options: Mapping[str, Any], allowed: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} for defense {name!r}; "
                         f"allowed: {', '.join(allowed)}")
    return {**allowed, **options}


class DefendedModel(nn.Module):
    """``model(transform(x))`` with the flags the gradient-masking checks read.

    Args:
        model: the classifier (images in [0, 1] -> logits).
        transform: input preprocessing, images -> images of the same shape.
        is_randomized: the transform draws random numbers (attack with EOT); None (the
            default) leaves it undeclared: the checks treat it as deterministic, but EOT still
            runs every pass it is asked for (only an explicit False lets it take one).
        is_differentiable: the transform passes useful gradients.
        uses_bpda: gradients flow through a BPDA surrogate of the transform.
    """

    def __init__(self, model: nn.Module, transform: Callable[[Tensor], Tensor], *,
                 is_randomized: bool | None = None, is_differentiable: bool = True,
                 uses_bpda: bool = False) -> None:
        super().__init__()
        self.model = model
        self.transform = transform
        self.is_randomized = is_randomized
        self.is_differentiable = is_differentiable
        self.uses_bpda = uses_bpda

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.transform(x))  # (B, K)


@register_defense("none")
def _none(model: nn.Module, options: Mapping[str, Any]) -> nn.Module:
    """The undefended model (the baseline column of every table)."""
    _options("none", options, {})
    return model


@register_defense("quantize")
def _quantize(model: nn.Module, options: Mapping[str, Any]) -> nn.Module:
    """Bit-depth reduction (Xu, Evans & Qi, 2018, "Feature Squeezing").

    ``round`` has zero gradient almost everywhere, so plain gradient attacks see nothing: the
    classic masked model. ``bpda: true`` restores gradients with an identity surrogate.
    """
    o = _options("quantize", options, {"bits": 3, "bpda": False})
    bits = o["bits"]
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"quantize: bits must be an int in [1, 8], got {bits!r}")
    levels = float(2**bits - 1)

    def squeeze(x: Tensor) -> Tensor:
        return torch.round(x * levels) / levels  # (B, C, H, W), 2**bits grey levels

    transform: Callable[[Tensor], Tensor] = BPDA(squeeze) if o["bpda"] else squeeze
    return DefendedModel(model, transform, is_randomized=False, is_differentiable=False,
                         uses_bpda=bool(o["bpda"]))


@register_defense("gaussian-noise")
def _gaussian_noise(model: nn.Module, options: Mapping[str, Any]) -> nn.Module:
    """Random Gaussian input noise (as in randomized smoothing, Cohen et al., 2019).

    A randomized defense: it must be attacked with EOT (``options: {eot: 10}`` on attacks).
    """
    o = _options("gaussian-noise", options, {"sigma": 0.1})
    sigma = float(o["sigma"])  # pixel units on [0, 1]
    if not sigma > 0:
        raise ValueError(f"gaussian-noise: sigma must be > 0, got {o['sigma']!r}")

    def noise(x: Tensor) -> Tensor:
        return (x + sigma * torch.randn_like(x)).clamp(0.0, 1.0)  # (B, C, H, W)

    return DefendedModel(model, noise, is_randomized=True)
