"""The maximum-softmax-probability detector (Hendrycks & Gimpel, ICLR 2017).

"A Baseline for Detecting Misclassified and Out-of-Distribution Examples in Neural Networks":
a confidently classified image is likely natural, so the score is ``-max_k softmax(f(x))_k``
(higher = more likely adversarial). Deterministic; no options.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from advimage.detect.base import Detector
from advimage.detect.registry import detector_options, register_detector

__all__ = ["MSPDetector"]


class MSPDetector(Detector):
    """Score ``-max softmax`` of the classifier (Hendrycks & Gimpel, 2017).

    Args:
        model: Classifier returning logits ``(B, K)`` for images in [0, 1].
    """

    is_randomized = False

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @torch.no_grad()
    def score(self, x: Tensor) -> Tensor:
        """``-max_k p_k`` ``(B,)``."""
        return -self.model(x).softmax(dim=1).amax(dim=1)  # (B,)


@register_detector("msp")
def _msp(model: nn.Module, options: Mapping[str, Any]) -> MSPDetector:
    """Maximum-softmax-probability baseline (Hendrycks & Gimpel, 2017); no options."""
    detector_options("msp", options, {})
    return MSPDetector(model)
