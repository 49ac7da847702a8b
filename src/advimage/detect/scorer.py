"""The noise-signature detector as a run-config scorer (Hu, Yu et al., NeurIPS 2019).

"A New Defense Against Adversarial Images: Turning a Weakness into a Strength": registers the
detector under ``noise-signature`` in :mod:`advimage.eval.defenses`, so run configs can put it
in front of any model and score images ``(B,)`` with one criterion or, given calibrated
thresholds, with the combined rule (positive exactly when the detector flags).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from advimage.detect.config import DetectorConfig, get_preset
from advimage.detect.noise_signature import NoiseSignatureDetector
from advimage.eval.defenses import register_detector

__all__: list[str] = []  # the detector is reached by name through advimage.eval.defenses

_OPTIONS = {"preset": "cifar10", "criterion": "c1", "criteria": None, "seed": 0,
            "batch_size": 256, "thresholds": None, "n_noise": None, "c2t_cap": None}


@register_detector("noise-signature")
def _noise_signature(model: torch.nn.Module, options: Mapping[str, Any]
                     ) -> Callable[[Tensor], Tensor]:
    """Noise-signature detector (Hu, Yu et al., 2019) as a run-config scorer ``(B,)``.

    Options: ``preset`` (cifar10 | imagenet | imagenet-inception), ``criterion`` (``c1``,
    ``c2t``, ``c2u`` or ``combined``), ``criteria`` (for combined, default ``c1,c2t``),
    ``thresholds`` (mapping criterion -> threshold, needed for combined: the score is then
    ``max_k (s_k - t_k) / max(|t_k|, 1e-12)``, positive exactly when the detector flags),
    ``n_noise`` / ``c2t_cap`` overrides, ``seed``, ``batch_size``.
    """
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} for detector 'noise-signature'; "
                         f"allowed: {', '.join(_OPTIONS)}")
    o = {**_OPTIONS, **options}
    config: DetectorConfig = get_preset(str(o["preset"]))
    for key in ("n_noise", "c2t_cap"):
        if o[key] is not None:
            config = config.replace(**{key: o[key]})
    criterion = str(o["criterion"]).lower()
    if criterion == "combined":
        if not isinstance(o["thresholds"], Mapping):
            raise ValueError("detector 'noise-signature': criterion combined needs options."
                             "thresholds {c1: ..., c2t: ...} (from `advimage detect calibrate`)")
        thresholds = {str(k): float(v) for k, v in o["thresholds"].items()}
        criteria = o["criteria"] or ",".join(thresholds)
    else:
        thresholds, criteria = {}, criterion
    det = NoiseSignatureDetector(model, config, criteria, seed=int(o["seed"]),
                                 batch_size=int(o["batch_size"]))
    if criterion == "combined" and set(thresholds) != set(det.criteria):
        raise ValueError(f"detector 'noise-signature': thresholds must name exactly "
                         f"{', '.join(det.criteria)}, got {', '.join(sorted(thresholds))}")

    def score(x: Tensor) -> Tensor:
        s = det.score(x)
        if criterion != "combined":
            return s[criterion].double()  # (B,)
        parts = [(s[k].double() - t) / max(abs(t), 1e-12) for k, t in thresholds.items()]
        return torch.stack(parts).amax(dim=0)  # (B,)

    return score
