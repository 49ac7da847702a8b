"""advimage.distill: knowledge distillation arms and the probes of Ojha et al. (NeurIPS 2023)."""

from advimage.distill.losses import build_regressor, hint_loss, kd_loss
from advimage.distill.probes import (
    agreement,
    fooling_rate,
    gradcam,
    gradcam_similarity,
    jitter_invariance,
)
from advimage.distill.runner import ARMS, DistillConfig, distill
from advimage.distill.transfer import run_transfer, save_gradcam_grid, transfer_probes

__all__ = [
    "ARMS",
    "DistillConfig",
    "distill",
    "kd_loss",
    "hint_loss",
    "build_regressor",
    "fooling_rate",
    "agreement",
    "gradcam",
    "gradcam_similarity",
    "jitter_invariance",
    "transfer_probes",
    "save_gradcam_grid",
    "run_transfer",
]
