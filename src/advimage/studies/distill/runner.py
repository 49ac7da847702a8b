"""Train a student from a frozen teacher (Hinton KD, FitNets) or without one (independent).

Ojha et al. (NeurIPS 2023), "What Knowledge Gets Distilled in Knowledge Distillation?" compare a
distilled student with an *independent* student trained by the identical recipe without a
teacher. All three arms run through :func:`advimage.train.train`, whose data order and
augmentation depend only on ``(seed, epoch)`` and whose student initialisation depends only on
``seed``, so the arms differ in the objective alone. Runs are resumable; the checkpoint sidecar
records the arm, the teacher's fingerprint and ``tau``/``alpha``/``beta``/``gamma``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advimage.data import load_dataset
from advimage.errors import UserInputError
from advimage.models import ImageClassifier, create_model
from advimage.studies.distill.losses import build_regressor, feature_shape, hint_loss, kd_loss
from advimage.train import TrainConfig, train
from advimage.train.config import check_range

__all__ = ["ARMS", "ArmObjective", "DistillConfig", "distill"]

log = logging.getLogger(__name__)

ARMS = ("kd", "fitnets", "independent")


@dataclass
class DistillConfig:
    """Objective of one arm: ``gamma*CE + alpha*tau^2*KL`` (kd), ``gamma*CE + beta*hint`` (fitnets).

    ``None`` weights take the arm's RepDistiller default: kd gamma 0.1 / alpha 0.9; fitnets
    gamma 1 / beta 100; independent gamma 1 (plain cross-entropy).
    """

    arm: str = "kd"
    tau: float = 4.0  # softmax temperature (unitless), Hinton KD
    alpha: float | None = None  # weight of the tau^2-scaled KL term
    beta: float | None = None  # weight of the FitNets hint term
    gamma: float | None = None  # weight of the hard-label cross-entropy
    teacher_layer: str | None = None  # FitNets hint layer (teacher)
    student_layer: str | None = None  # FitNets guided layer (student)

    def __post_init__(self) -> None:
        if self.arm not in ARMS:
            raise UserInputError(f"arm must be one of {', '.join(ARMS)}, got {self.arm!r}")
        check_range("tau", self.tau, 0, None, low_open=True)
        defaults = {
            "kd": (0.9, 0.0, 0.1),
            "fitnets": (0.0, 100.0, 1.0),
            "independent": (0.0, 0.0, 1.0),
        }[self.arm]
        for name, default in zip(("alpha", "beta", "gamma"), defaults, strict=True):
            value = getattr(self, name)
            value = default if value is None else value
            check_range(name, value, 0, 1 if name == "alpha" else None)
            setattr(self, name, float(value))
        if self.arm == "fitnets" and not (self.teacher_layer and self.student_layer):
            raise UserInputError(
                "the fitnets arm needs teacher_layer and student_layer (hint layers)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_teacher(
    teacher: ImageClassifier, teacher_meta: dict[str, Any] | None, dataset: str, num_classes: int,
    student_input_shape: tuple[int, ...],
) -> None:
    """Refuse a teacher of another dataset, class count or input shape than the student's."""
    trained_on = (teacher_meta or {}).get("dataset")
    if trained_on is not None and trained_on != dataset:
        raise ValueError(
            f"teacher checkpoint was trained on dataset {trained_on!r}, not {dataset!r}"
        )
    if teacher.num_classes != num_classes:
        raise ValueError(
            f"teacher has {teacher.num_classes} classes but the student's dataset {dataset!r} "
            f"has {num_classes}"
        )
    if tuple(teacher.input_shape) != tuple(student_input_shape):
        raise ValueError(
            f"teacher input shape {teacher.input_shape} differs from the student's "
            f"{student_input_shape}"
        )


@dataclass
class ArmObjective:
    """The per-batch loss of one arm: the trainer's ``loss_hook`` (Hinton KD, FitNets, CE).

    ``gamma * CE`` on the hard labels, plus ``alpha * tau^2 * KL`` to the frozen teacher's
    softened logits (kd, Hinton et al. 2015) or ``beta * hint`` between the regressed student
    feature map and the teacher's (fitnets, Romero et al. 2015); independent: the CE term only.
    """

    cfg: DistillConfig
    teacher: ImageClassifier | None = None  # frozen; required by kd and fitnets
    regressor: nn.Module | None = None  # the FitNets hint regressor (trained with the student)
    label_smoothing: float = 0.0
    batch_callback: Callable[[Tensor, Tensor], None] | None = None

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Loss and logits (B, K) of ``model`` on the batch ``x`` (B, C, H, W), ``y`` (B,)."""
        if self.batch_callback is not None:
            self.batch_callback(x, y)
        cfg = self.cfg
        s_layer, t_layer = str(cfg.student_layer), str(cfg.teacher_layer)
        if cfg.arm == "fitnets":
            logits, feats = model.forward_with_features(x, [s_layer])  # type: ignore[operator]
        else:
            logits = model(x)  # (B, K)
        loss = cfg.gamma * F.cross_entropy(  # type: ignore[operator]
            logits, y, label_smoothing=self.label_smoothing
        )
        if cfg.arm == "independent":
            return loss, logits
        if self.teacher is None:
            raise ValueError(f"the {cfg.arm} arm needs a teacher model")
        frozen = self.teacher.to(x.device)
        if cfg.arm == "kd":
            with torch.no_grad():
                t_logits = frozen(x)  # (B, K)
            return loss + cfg.alpha * kd_loss(logits, t_logits, cfg.tau), logits  # type: ignore[operator]
        with torch.no_grad():
            _, t_feats = frozen.forward_with_features(x, [t_layer])
        regressed = self.regressor(feats[s_layer])  # type: ignore[misc]
        return loss + cfg.beta * hint_loss(t_feats[t_layer], regressed), logits  # type: ignore[operator]


def distill(
    train_cfg: TrainConfig,
    distill_cfg: DistillConfig,
    out_dir: str | Path,
    *,
    teacher: ImageClassifier | None = None,
    teacher_meta: dict[str, Any] | None = None,
    device: str | torch.device = "auto",
    resume: bool = True,
    progress: bool = True,
    batch_callback: Callable[[Tensor, Tensor], None] | None = None,
) -> tuple[ImageClassifier, dict[str, Any]]:
    """Train one arm of Ojha et al.'s study; returns the student and its final metrics.

    Args:
        train_cfg: the shared recipe (student arch, data, schedule, seed): identical across arms.
        distill_cfg: arm and loss weights.
        out_dir: run directory (resumable; see :func:`advimage.train.train`).
        teacher: frozen teacher (required for kd and fitnets; ignored by independent).
        teacher_meta: the teacher's checkpoint sidecar; its ``dataset`` must match.
        device: ``auto``, ``cpu``, ``cuda`` or a torch device.
        resume: continue ``out_dir``'s run when it holds one.
        progress: show a progress bar per epoch.
        batch_callback: called with each training batch ``(x, y)`` (e.g. to log the order).

    Raises:
        ValueError: a missing teacher, or one of another dataset, class count or input shape.
    """
    arm = distill_cfg.arm
    train_ds = load_dataset(train_cfg.dataset, "train", data_root=train_cfg.data_root)
    probe = create_model(
        train_cfg.model, num_classes=train_ds.num_classes, **train_cfg.model_kwargs
    )
    info: dict[str, Any] = {"arm": arm, **distill_cfg.to_dict()}
    regressor: nn.Module | None = None
    if arm != "independent":
        if teacher is None:
            raise ValueError(f"the {arm} arm needs a teacher model")
        _check_teacher(teacher, teacher_meta, train_cfg.dataset, train_ds.num_classes,
                       tuple(probe.input_shape))
        teacher.eval()
        teacher.requires_grad_(False)
        info["teacher_fingerprint"] = teacher.fingerprint()
        info["teacher_arch"] = teacher.arch
    if arm == "fitnets":
        regressor = _hint_regressor(teacher, probe, distill_cfg, train_cfg.seed)  # type: ignore[arg-type]
    del probe
    objective = ArmObjective(distill_cfg, teacher if arm != "independent" else None, regressor,
                             train_cfg.label_smoothing, batch_callback)
    log.info("distillation arm %s: %s", arm, info)
    return train(train_cfg, out_dir, device=device, resume=resume, progress=progress,
                 loss_hook=objective, extra_modules=regressor, run_info={"distill": info})


def _hint_regressor(
    teacher: ImageClassifier, student: ImageClassifier, cfg: DistillConfig, seed: int
) -> nn.Module:
    """FitNets' regressor from the student's hint layer onto the teacher's, seeded by ``seed``."""
    t_shape = feature_shape(teacher, str(cfg.teacher_layer), teacher.input_shape)
    s_shape = feature_shape(student, str(cfg.student_layer), student.input_shape)
    torch.manual_seed(seed)  # regressor init; train() reseeds for the student
    return build_regressor(s_shape, t_shape)
