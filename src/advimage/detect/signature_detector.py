"""The noise-signature detector behind the :class:`~advimage.detect.base.Detector` contract.

Hu, Yu et al. (NeurIPS 2019), "A New Defense Against Adversarial Images: Turning a Weakness
into a Strength": registered as ``noise-signature``, so run configs and the detection study
put it in front of any model. It scores ``(B,)`` with one criterion (``c1``, ``c2t``, ``c2u``)
or, with per-criterion thresholds, with the combined rule (positive exactly when the detector
flags); :meth:`SignatureDetector.criterion_scores` gives every enabled criterion from one
scoring pass of :class:`~advimage.detect.noise_signature.NoiseSignatureDetector`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from advimage.detect.base import Detector
from advimage.detect.calibration import joint_thresholds
from advimage.detect.config import DetectorConfig, get_preset
from advimage.detect.noise_signature import NoiseSignatureDetector
from advimage.detect.registry import detector_options, register_detector

__all__ = ["OPTIONS", "SignatureDetector"]

OPTIONS: dict[str, Any] = {"preset": "cifar10", "criterion": "c1", "criteria": None,
                           "seed": 0, "batch_size": 256, "thresholds": None, "n_noise": None,
                           "c2t_cap": None, "set": None}


class SignatureDetector(Detector):
    """One score ``(B,)`` of the noise-signature detector (Hu, Yu et al., 2019).

    Args:
        engine: The multi-criterion detector (model attached, criteria enabled).
        criterion: The criterion :meth:`score` returns, or ``"combined"``.
        thresholds: Criterion -> threshold for ``combined`` (or from :meth:`calibrate`).
    """

    # every score draws Gaussian noise and random C2t targets (seeded per call)
    is_randomized = True

    def __init__(self, engine: NoiseSignatureDetector, criterion: str = "c1",
                 thresholds: Mapping[str, float] | None = None) -> None:
        criterion = str(criterion).lower()
        if criterion != "combined" and criterion not in engine.criteria:
            raise ValueError(f"detector 'noise-signature': criterion {criterion!r} is not "
                             f"among its criteria {', '.join(engine.criteria)}")
        self.engine, self.criterion = engine, criterion
        self.thresholds = dict(thresholds) if thresholds is not None else None
        if criterion == "combined" and self.thresholds is not None:
            self.threshold = 0.0

    @property
    def criteria(self) -> tuple[str, ...]:
        """The enabled criteria (``c1``, ``c2t``, ``c2u``), canonical order."""
        return self.engine.criteria

    def criterion_scores(self, x: Tensor) -> dict[str, Tensor]:
        """Every enabled criterion ``(B,)`` (C1 float, C2 step counts), one pass."""
        return self.engine.score(x)

    def _combine(self, s: Mapping[str, Tensor]) -> Tensor:
        if self.criterion != "combined":
            return s[self.criterion].double()  # (B,)
        if self.thresholds is None:
            raise ValueError("detector 'noise-signature': criterion combined needs thresholds "
                             "(options.thresholds, or calibrate() first)")
        parts = [(s[k].double() - t) / max(abs(t), 1e-12) for k, t in self.thresholds.items()]
        return torch.stack(parts).amax(dim=0)  # (B,) > 0 exactly when a criterion fires

    def score(self, x: Tensor) -> Tensor:
        """The criterion's scores, or ``max_k (s_k - t_k) / max(|t_k|, 1e-12)`` combined."""
        return self._combine(self.criterion_scores(x))

    def calibrate(self, x_clean: Tensor, fpr: float) -> float:
        """One criterion: the shared rule; combined: the joint equal-budget thresholds
        (:func:`~advimage.detect.calibration.joint_thresholds`) and threshold 0."""
        if self.criterion != "combined":
            return super().calibrate(x_clean, fpr)
        s = self.criterion_scores(x_clean)
        self.thresholds = joint_thresholds({k: s[k] for k in self.engine.criteria}, fpr)[0]
        self.threshold = 0.0
        return self.threshold


def _config(o: Mapping[str, Any]) -> DetectorConfig:
    config = get_preset(str(o["preset"]))
    if o["set"]:
        if not isinstance(o["set"], Mapping):
            raise ValueError("detector 'noise-signature': options.set must be a mapping "
                             "{setting: value}")
        config = config.replace(**o["set"])
    for key in ("n_noise", "c2t_cap"):
        if o[key] is not None:
            config = config.replace(**{key: o[key]})
    return config


@register_detector("noise-signature")
def _noise_signature(model: nn.Module, options: Mapping[str, Any]) -> SignatureDetector:
    """Noise-signature detector (Hu, Yu et al., 2019) as a :class:`Detector`.

    Options: ``preset`` (cifar10 | imagenet | imagenet-inception), ``criterion`` (``c1``,
    ``c2t``, ``c2u`` or ``combined``), ``criteria`` (the criteria scored; default the
    criterion, or the thresholds' keys for combined), ``thresholds`` (criterion ->
    threshold, e.g. from `advimage detect calibrate`), ``set`` ({setting: value} overrides
    of the preset), ``n_noise`` / ``c2t_cap`` overrides, ``seed``, ``batch_size``.
    """
    o = detector_options("noise-signature", options, OPTIONS)
    criterion = str(o["criterion"]).lower()
    thresholds = None
    if o["thresholds"] is not None:
        if not isinstance(o["thresholds"], Mapping):
            raise ValueError("detector 'noise-signature': options.thresholds must be a mapping "
                             "{c1: ..., c2t: ...} (from `advimage detect calibrate`)")
        thresholds = {str(k): float(v) for k, v in o["thresholds"].items()}
    if criterion == "combined" and thresholds is None:
        raise ValueError("detector 'noise-signature': criterion combined needs options."
                         "thresholds {c1: ..., c2t: ...} (from `advimage detect calibrate`)")
    criteria = o["criteria"] or (",".join(thresholds) if criterion == "combined" and thresholds
                                 else criterion)
    engine = NoiseSignatureDetector(model, _config(o), criteria, seed=int(o["seed"]),
                                    batch_size=int(o["batch_size"]))
    if criterion == "combined" and thresholds is not None \
            and set(thresholds) != set(engine.criteria):
        raise ValueError(f"detector 'noise-signature': thresholds must name exactly "
                         f"{', '.join(engine.criteria)}, got {', '.join(sorted(thresholds))}")
    return SignatureDetector(engine, criterion, thresholds)
