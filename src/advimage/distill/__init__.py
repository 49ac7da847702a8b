"""advimage.distill: knowledge distillation arms and the probes of Ojha et al. (NeurIPS 2023)."""

from advimage.distill.gradcam import (
    gradcam,
    gradcam_probe,
    gradcam_similarity,
    last_conv_layer,
    save_gradcam_grid,
)
from advimage.distill.losses import build_regressor, hint_loss, kd_loss
from advimage.distill.probes import (
    agreement,
    fooling_rate,
    jitter_invariance,
    pooled_fooling_rate,
)
from advimage.distill.runner import ARMS, DistillConfig, distill
from advimage.distill.transfer import format_transfer, run_transfer, transfer_probes

__all__ = [
    "ARMS",
    "DistillConfig",
    "distill",
    "kd_loss",
    "hint_loss",
    "build_regressor",
    "fooling_rate",
    "pooled_fooling_rate",
    "agreement",
    "gradcam",
    "gradcam_similarity",
    "gradcam_probe",
    "last_conv_layer",
    "jitter_invariance",
    "transfer_probes",
    "save_gradcam_grid",
    "run_transfer",
    "format_transfer",
]
