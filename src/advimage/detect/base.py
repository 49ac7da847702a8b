"""The detector contract: score images, calibrate a threshold at a target false-positive rate.

A detector of adversarial images (e.g. the maximum-softmax baseline of Hendrycks & Gimpel,
2017, or the noise-signature detector of Hu, Yu et al., NeurIPS 2019) maps images to one
score per image, higher meaning "more likely adversarial". It is calibrated on clean held-out
images: the threshold is the order statistic that leaves at most ``floor(fpr * n)`` clean
scores strictly above it (:func:`advimage.detect.calibration.threshold_at`), and an image is
flagged when its score exceeds the threshold.

:class:`Detector` is an abstract base class rather than a ``typing.Protocol``: the threshold
rule and :meth:`Detector.detect` are shared code every detector inherits, and a subclass that
does not declare ``is_randomized`` is refused when its class is created, not at its first use.
A new detector is one file with a subclass implementing :meth:`Detector.score` plus one
``@register_detector`` line (:mod:`advimage.detect.registry`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from torch import Tensor

from advimage.detect.calibration import check_fpr, threshold_at

__all__ = ["Detector"]


class Detector(ABC):
    """An adversarial-image detector: ``score``, ``calibrate`` at a target FPR, ``detect``.

    Subclasses must set the class attribute ``is_randomized`` (``True`` when a score draws
    random numbers, e.g. noise, so a white-box attacker needs EOT); there is no default.

    Attributes:
        threshold: The calibrated threshold (``None`` until :meth:`calibrate` ran).
    """

    is_randomized: ClassVar[bool]
    threshold: float | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = any("is_randomized" in vars(k) for k in cls.__mro__ if k is not Detector)
        if not declared or not isinstance(cls.is_randomized, bool):
            raise TypeError(f"detector class {cls.__name__} must declare is_randomized "
                            "(True or False) as a class attribute")

    @abstractmethod
    def score(self, x: Tensor) -> Tensor:
        """Scores ``(B,)`` (float, finite) of images ``(B, C, H, W)``; higher = adversarial."""

    @property
    def criteria(self) -> tuple[str, ...]:
        """Names of the scores :meth:`criterion_scores` returns, in order."""
        return ("score",)

    def criterion_scores(self, x: Tensor) -> dict[str, Tensor]:
        """Criterion -> ``(B,)`` scores; one criterion, ``score``, unless a detector has several.

        The detection study (:mod:`advimage.studies.detection`) evaluates every criterion and
        their combination; a multi-criterion detector overrides this to score them in one pass.
        """
        return {"score": self.score(x)}

    def calibrate(self, x_clean: Tensor, fpr: float) -> float:
        """Set :attr:`threshold` so at most ``floor(fpr * n)`` of ``x_clean`` score above it.

        Args:
            x_clean: Clean held-out images ``(n, C, H, W)``, ``n >= ceil(1 / fpr)``.
            fpr: Target false-positive rate in (0, 1).

        Returns:
            The threshold.

        Raises:
            ValueError: a bad ``fpr`` or too few images for it.
        """
        fpr = check_fpr(fpr)
        n = len(x_clean)
        need = math.ceil(1.0 / fpr - 1e-9)
        if n < need:
            raise ValueError(f"fpr {fpr:g} needs at least {need} calibration images, got {n}")
        scores = self.score(x_clean)
        self.threshold = threshold_at(scores, math.floor(fpr * n + 1e-9))
        return self.threshold

    def detect(self, x: Tensor) -> Tensor:
        """``(B,)`` bool: ``score(x) > threshold``.

        Raises:
            ValueError: the detector is not calibrated.
        """
        if self.threshold is None:
            raise ValueError(f"{type(self).__name__} is not calibrated; call calibrate() first")
        return self.score(x).double() > self.threshold

    def __call__(self, x: Tensor) -> Tensor:
        """Same as :meth:`score` (a detector is a scorer ``(B,)``)."""
        return self.score(x)
