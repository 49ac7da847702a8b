"""advimage.detect: detectors of adversarial images behind one contract.

:class:`Detector` (:mod:`advimage.detect.base`) scores images ``(B,)``, calibrates its
threshold on clean images at a target false-positive rate and flags images above it; the
registry (:mod:`advimage.detect.registry`) builds detectors by name. Importing this package
registers every detector module: ``msp`` (Hendrycks & Gimpel, 2017) and ``noise-signature``,
the detector of Hu, Yu et al. (NeurIPS 2019), "A New Defense Against Adversarial Images:
Turning a Weakness into a Strength" (batched criteria, joint calibration at a target FPR,
JSON persistence keyed on the model fingerprint, and the differentiable surrogates and
attacks an adaptive white-box attacker needs). The detection metrics (rates at FPRs, ROC/AUC)
are in :mod:`advimage.detect.metrics`; the detection study runs in :mod:`advimage.eval`'s
harness (:mod:`advimage.studies.detection`).
"""

from advimage.detect import msp, signature_detector  # noqa: F401  (register the detectors)
from advimage.detect.adaptive import AdaptiveAttack, HuAttack
from advimage.detect.base import Detector
from advimage.detect.calibration import (
    check_fpr,
    joint_thresholds,
    min_calibration_size,
    threshold_at,
)
from advimage.detect.config import CRITERIA, PRESETS, DetectorConfig, check_criteria, get_preset
from advimage.detect.criteria import draw_noise, random_targets, softmax_l1_change, steps_to_flip
from advimage.detect.metrics import combined_score, detection_rates, roc_aucs
from advimage.detect.msp import MSPDetector
from advimage.detect.noise_signature import (
    DEFAULT_CRITERIA,
    NoiseSignatureDetector,
    model_fingerprint,
)
from advimage.detect.registry import (
    DETECTORS,
    build_detector,
    list_detectors,
    register_detector,
)
from advimage.detect.signature_detector import SignatureDetector
from advimage.detect.surrogates import c2t_surrogate_loss, c2u_surrogate_loss, one_step_attack

__all__ = [
    "AdaptiveAttack",
    "CRITERIA",
    "DEFAULT_CRITERIA",
    "DETECTORS",
    "Detector",
    "DetectorConfig",
    "HuAttack",
    "MSPDetector",
    "NoiseSignatureDetector",
    "PRESETS",
    "SignatureDetector",
    "build_detector",
    "c2t_surrogate_loss",
    "c2u_surrogate_loss",
    "check_criteria",
    "check_fpr",
    "combined_score",
    "detection_rates",
    "draw_noise",
    "get_preset",
    "joint_thresholds",
    "list_detectors",
    "min_calibration_size",
    "model_fingerprint",
    "one_step_attack",
    "random_targets",
    "register_detector",
    "roc_aucs",
    "softmax_l1_change",
    "steps_to_flip",
    "threshold_at",
]
