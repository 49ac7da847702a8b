"""advimage.studies.distill: the distillation transfer study of Ojha et al. (NeurIPS 2023).

Knowledge-distillation arms (Hinton KD, FitNets, independent), the transfer probes, Grad-CAM,
the runner and the report builder of ``reports/distill``.
"""

from advimage.studies.distill.gradcam import (
    gradcam,
    gradcam_probe,
    gradcam_similarity,
    last_conv_layer,
    save_gradcam_grid,
)
from advimage.studies.distill.losses import build_regressor, hint_loss, kd_loss
from advimage.studies.distill.probes import (
    agreement,
    fooling_rate,
    jitter_invariance,
    pooled_fooling_rate,
)
from advimage.studies.distill.runner import ARMS, ArmObjective, DistillConfig, distill
from advimage.studies.distill.transfer import format_transfer, transfer_probes
from advimage.studies.distill.transfer_run import run_transfer

__all__ = [
    "ARMS",
    "ArmObjective",
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
