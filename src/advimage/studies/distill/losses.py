"""Distillation objectives: Hinton KD and FitNets hints (with the learned hint regressor).

Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network": the student
matches the teacher's temperature-softened class distribution; the ``tau**2`` factor keeps the
soft-target gradients on the same scale as the hard-label ones when ``tau`` changes.
Romero et al. (2015), "FitNets: Hints for Thin Deep Nets": a learned regressor ``r`` maps a
student ("guided") layer onto a teacher ("hint") layer and the student minimises
``0.5 * ||f_t - r(f_s)||^2``. Both are the arms compared by Ojha et al. (NeurIPS 2023), "What
Knowledge Gets Distilled in Knowledge Distillation?".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["kd_loss", "hint_loss", "build_regressor", "feature_shape"]


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, tau: float = 4.0) -> Tensor:
    """``tau**2 * KL(softmax(z_t / tau) || softmax(z_s / tau))``, averaged over the batch.

    Args:
        student_logits: ``(B, K)`` student logits.
        teacher_logits: ``(B, K)`` teacher logits (treated as constants).
        tau: softmax temperature (> 0); 4 in Hinton et al. and RepDistiller's CIFAR runs.
    """
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape"
        )
    log_p_s = F.log_softmax(student_logits / tau, dim=1)  # (B, K)
    log_p_t = F.log_softmax(teacher_logits.detach() / tau, dim=1)  # (B, K)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * tau**2


def hint_loss(teacher_feat: Tensor, regressed_student_feat: Tensor) -> Tensor:
    """FitNets hint loss ``0.5 * (f_t - r(f_s))**2``, averaged over batch and feature elements.

    The per-element mean (RepDistiller's ``MSELoss`` convention, times FitNets' 0.5) keeps the
    loss independent of the layer size, so one ``beta`` works across layers.
    """
    if teacher_feat.shape != regressed_student_feat.shape:
        raise ValueError(
            f"hint features differ in shape: teacher {tuple(teacher_feat.shape)}, "
            f"regressed student {tuple(regressed_student_feat.shape)}"
        )
    return 0.5 * F.mse_loss(regressed_student_feat, teacher_feat.detach())


def build_regressor(
    student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]
) -> nn.Module:
    """The hint regressor ``r`` mapping one student feature map onto the teacher's.

    Conv features ``(C_s, H, W) -> (C_t, H, W)``: 1x1 convolution + batch norm (spatial sizes must
    agree). Flat features ``(D_s,) -> (D_t,)``: a linear layer. Shapes exclude the batch axis.

    Raises:
        ValueError: naming both shapes when no such regressor can match them.
    """
    s, t = tuple(int(v) for v in student_shape), tuple(int(v) for v in teacher_shape)
    if len(s) == 3 and len(t) == 3 and s[1:] == t[1:]:
        return nn.Sequential(nn.Conv2d(s[0], t[0], 1, bias=False), nn.BatchNorm2d(t[0]))
    if len(s) == 1 and len(t) == 1:
        return nn.Linear(s[0], t[0])
    raise ValueError(
        f"hint layers cannot be matched by a regressor: student feature shape {s} vs teacher "
        f"feature shape {t} (need (C, H, W) with equal H, W for a 1x1 conv, or flat (D,) for a "
        "linear map); choose other --hint-layers"
    )


def feature_shape(
    model: nn.Module, layer: str, input_shape: tuple[int, ...]
) -> tuple[int, ...]:
    """Per-image output shape of ``layer`` (one dummy forward in eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    try:
        ref = next(iter(model.parameters()))
        dummy = torch.zeros((2, *input_shape), dtype=ref.dtype, device=ref.device)  # (2, C, H, W)
        with torch.no_grad():
            _, feats = model.forward_with_features(dummy, [layer])  # type: ignore[operator]
    finally:
        model.train(was_training)
    return tuple(feats[layer].shape[1:])
