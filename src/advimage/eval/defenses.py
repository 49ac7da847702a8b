"""Detector registry that run configs plug into by name.

A *detector builder* is ``builder(model, options) -> callable(x) -> scores (B,)``, higher
meaning "more likely adversarial"; runs store the scores and the report draws ROC curves.

Capabilities register their own builders (``@register_detector("noise-signature")``) in their
modules; this module ships the ``msp`` detector. Defenses live in
:mod:`advimage.defend.registry`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from advimage.registry import Registry

__all__ = [
    "DETECTORS",
    "build_detector",
    "list_detectors",
    "register_detector",
]

DetectorBuilder = Callable[[nn.Module, Mapping[str, Any]], Callable[[Tensor], Tensor]]
DETECTORS: Registry[DetectorBuilder] = Registry("detector")


def register_detector(name: str) -> Callable[[DetectorBuilder], DetectorBuilder]:
    """Decorator: register a detector builder ``(model, options) -> scorer`` under ``name``."""
    return DETECTORS.register(name)  # type: ignore[return-value]


def _load_plugins() -> None:
    """Import the capability packages so their ``register_*`` decorators have run."""
    import advimage.detect  # noqa: F401


def list_detectors() -> list[str]:
    _load_plugins()
    return DETECTORS.names()


def build_detector(name: str, model: nn.Module, options: Mapping[str, Any]
                   ) -> Callable[[Tensor], Tensor]:
    _load_plugins()
    return DETECTORS.get(name)(model, dict(options))


@register_detector("msp")
def _msp(model: nn.Module, options: Mapping[str, Any]) -> Callable[[Tensor], Tensor]:
    """Maximum-softmax-probability baseline (Hendrycks & Gimpel, 2017): score = -max p."""
    if options:
        raise ValueError(f"unknown option {sorted(options)[0]!r} for detector 'msp'; allowed: "
                         "(none)")

    @torch.no_grad()
    def score(x: Tensor) -> Tensor:
        return -model(x).softmax(dim=1).amax(dim=1)  # (B,)

    return score
