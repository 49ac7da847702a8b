"""advimage.detect: detectors of adversarial images.

The noise-signature detector of Hu, Yu et al. (NeurIPS 2019), "A New Defense Against
Adversarial Images: Turning a Weakness into a Strength": batched criteria, calibration at a
target false-positive rate, JSON persistence keyed on the model fingerprint, and the
differentiable surrogates an adaptive white-box attack needs.
"""

from advimage.detect.adaptive import AdaptiveAttack, HuAttack
from advimage.detect.calibration import (
    check_fpr,
    joint_thresholds,
    min_calibration_size,
    threshold_at,
)
from advimage.detect.config import CRITERIA, PRESETS, DetectorConfig, check_criteria, get_preset
from advimage.detect.criteria import draw_noise, random_targets, softmax_l1_change, steps_to_flip
from advimage.detect.evaluation import (
    combined_score,
    detection_rates,
    roc_aucs,
    run_detection_eval,
)
from advimage.detect.inputs import load_images
from advimage.detect.noise_signature import (
    DEFAULT_CRITERIA,
    NoiseSignatureDetector,
    model_fingerprint,
)
from advimage.detect.surrogates import c2t_surrogate_loss, c2u_surrogate_loss, one_step_attack

__all__ = [
    "AdaptiveAttack",
    "HuAttack",
    "combined_score",
    "detection_rates",
    "roc_aucs",
    "run_detection_eval",
    "CRITERIA",
    "DEFAULT_CRITERIA",
    "PRESETS",
    "DetectorConfig",
    "NoiseSignatureDetector",
    "c2t_surrogate_loss",
    "c2u_surrogate_loss",
    "check_criteria",
    "check_fpr",
    "draw_noise",
    "get_preset",
    "joint_thresholds",
    "load_images",
    "min_calibration_size",
    "model_fingerprint",
    "one_step_attack",
    "random_targets",
    "softmax_l1_change",
    "steps_to_flip",
    "threshold_at",
]
