"""The detector registry: run configs and the detection study build detectors by name.

A *detector builder* is ``builder(model, options) -> Detector``
(:class:`advimage.detect.base.Detector`); a detector module registers its builder with
``@register_detector("name")`` and validates its options with :func:`detector_options`,
the one unknown-option check of the package.
:mod:`advimage.detect` imports every detector module, so importing the package registers them
all: the maximum-softmax baseline ``msp`` (Hendrycks & Gimpel, 2017) and ``noise-signature``
(Hu, Yu et al., NeurIPS 2019).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from advimage.detect.base import Detector
from advimage.registry import Registry

__all__ = ["DETECTORS", "DetectorBuilder", "build_detector", "detector_options",
           "list_detectors", "register_detector"]

DetectorBuilder = Callable[[nn.Module, Mapping[str, Any]], Detector]
DETECTORS: Registry[DetectorBuilder] = Registry("detector")


def register_detector(name: str) -> Callable[[DetectorBuilder], DetectorBuilder]:
    """Decorator: register a detector builder ``(model, options) -> Detector`` under ``name``."""
    return DETECTORS.register(name)  # type: ignore[return-value]


def list_detectors() -> list[str]:
    """The registered detector names, sorted."""
    return DETECTORS.names()


def detector_options(name: str, options: Mapping[str, Any],
                     defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``options``; ``ValueError`` naming an unknown option.

    Args:
        name: The detector's registry name (for the message).
        options: The options a config gave.
        defaults: Every allowed option with its default value.
    """
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        allowed = ", ".join(defaults) or "(none)"
        raise ValueError(f"unknown option {unknown[0]!r} for detector {name!r}; "
                         f"allowed: {allowed}")
    return {**defaults, **options}


def build_detector(name: str, model: nn.Module, options: Mapping[str, Any]) -> Detector:
    """The detector ``name`` over ``model`` (``ValueError`` for unknown names or options)."""
    out = DETECTORS.get(name)(model, dict(options))
    if not isinstance(out, Detector):
        raise ValueError(f"detector {name!r} must build a Detector, got {type(out).__name__}")
    return out
