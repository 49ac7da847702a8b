"""The transfer experiment of Ojha et al. (NeurIPS 2023): what a KD student inherits.

"What Knowledge Gets Distilled in Knowledge Distillation?" compares a distilled (KD) student with
an *independent* student of the same recipe on held-out images: (1) the share of the teacher's
adversarial images (I-FGSM, k = 5) that also fool each student, with a control crafted on a
*foreign* network of the student's architecture (no gap expected there); (2) top-1 agreement with
the teacher; (3) whether the teacher's Grad-CAM of the true class is closer to the KD student's map
than to the independent one's (chance 50%); (4) invariance to colour jitter. This module is the
orchestration: :func:`transfer_probes` runs the probes of :mod:`~advimage.studies.distill.probes`
and :mod:`~advimage.studies.distill.gradcam` over an image set and returns plain JSON numbers;
:func:`format_transfer` prints them as a text table. Loading checkpoints and data and writing the
results is :mod:`advimage.studies.distill.transfer_run`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from advimage.data import ColorJitter
from advimage.eval.plots import eps_label
from advimage.models import ImageClassifier
from advimage.studies.distill.gradcam import gradcam_probe, last_conv_layer
from advimage.studies.distill.probes import (
    agreement,
    iter_batches,
    jitter_invariance,
    pooled_fooling_rate,
)
from advimage.train.recipe import COLOR_JITTER
from advimage.utils import resolve_device
from advimage.validation import check_images, check_labels

__all__ = ["JITTER", "format_transfer", "last_conv_layer", "roles", "transfer_probes"]

# the trainer's colour jitter (TrainConfig.augment="jitter"): brightness/contrast/saturation
# factors drawn uniformly in [0.6, 1.4] (unitless)
JITTER = COLOR_JITTER


def roles(teacher: Any, kd: Any, independent: Any, foreign: Any | None) -> dict[str, Any]:
    """The probe's models (or their checkpoint specs) by role; ``foreign`` only when given."""
    roles = {"teacher": teacher, "kd": kd, "independent": independent}
    if foreign is not None:
        roles["foreign"] = foreign
    return roles


def transfer_probes(
    teacher: ImageClassifier,
    kd: ImageClassifier,
    independent: ImageClassifier,
    x: Tensor,
    y: Tensor,
    *,
    foreign: ImageClassifier | None = None,
    eps: Sequence[float] = (2 / 255, 4 / 255, 8 / 255),
    steps: int = 5,
    cam_layers: Sequence[str] | None = None,
    jitter: bool = True,
    seed: int = 0,
    device: str | torch.device = "auto",
    batch_size: int = 256,
) -> dict[str, Any]:
    """All four probes of Ojha et al. on held-out images ``x`` (N, C, H, W) in [0, 1], ``y`` (N,).

    Models are moved to ``device`` and set to eval mode; images go through in chunks of
    ``batch_size`` so memory stays bounded.

    Args:
        teacher: the network whose I-FGSM images (``eps`` budgets, L-inf; ``steps`` = k) are
            shown to the distilled student ``kd`` and the ``independent`` one.
        foreign: a network of the student's architecture trained independently (e.g. an
            independent student of another seed): adds the control, fooling rates of both
            students on images crafted on it.
        cam_layers: (teacher, kd, independent) Grad-CAM layers; default each
            :func:`last_conv_layer`.
        jitter: run the colour-jitter invariance probe (seeded by ``seed``).

    Returns:
        JSON-able dict: ``accuracy``, ``fooling_rate`` and ``control`` (one entry per eps with
        ``kept`` images and ``rates``), ``agreement``, ``gradcam``, ``invariance`` (``None`` if
        ``jitter`` is false), ``n``, ``seconds``.
    """
    t0 = time.time()
    models = roles(teacher, kd, independent, foreign)
    eps = _check_probe_inputs(teacher, models, x, y, eps, batch_size)
    dev = resolve_device(device)
    for m in models.values():
        m.to(dev).eval()
    students = {k: v for k, v in models.items() if k != "teacher"}

    def batches() -> Iterator[tuple[Tensor, Tensor]]:
        return iter_batches(x, y, batch_size, dev)

    res: dict[str, Any] = {"n": len(x), "eps": eps, "steps": steps}
    res["accuracy"] = _accuracies(models, batches(), len(x))
    res["agreement"] = {n: agreement(teacher, s, batches()) for n, s in students.items()}
    res["fooling_rate"] = [pooled_fooling_rate(teacher, students, x, y, e, steps=steps,
                                               batch_size=batch_size, device=dev) for e in eps]
    res["control"] = None if foreign is None else _control(
        foreign, {"kd": kd, "independent": independent, "teacher": teacher}, x, y, eps,
        steps=steps, batch_size=batch_size, device=dev)
    res["gradcam"] = gradcam_probe(teacher, kd, independent, batches(), cam_layers)
    res["invariance"] = _invariance(models, batches, seed) if jitter else None
    res["seconds"] = time.time() - t0
    return res


def _check_probe_inputs(
    teacher: ImageClassifier, models: dict[str, Any], x: Tensor, y: Tensor,
    eps: Sequence[float], batch_size: int,
) -> list[float]:
    """Refuse bad images, labels, budgets, batch size or mismatched models; returns the eps."""
    check_images(x)
    check_labels(y, len(x))
    budgets = [float(e) for e in eps]
    if not budgets or any(not e > 0 for e in budgets):
        raise ValueError(f"eps needs at least one value > 0, got {budgets}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for name, m in models.items():
        if not isinstance(m, ImageClassifier):
            raise ValueError(f"{name} must be an ImageClassifier, got {type(m).__name__}")
        if m.num_classes != teacher.num_classes:
            raise ValueError(f"class counts differ: teacher has {teacher.num_classes} classes, "
                             f"{name} has {m.num_classes}")
        if tuple(m.input_shape) != tuple(x.shape[1:]):
            raise ValueError(f"{name} expects images {tuple(m.input_shape)}, got "
                             f"{tuple(x.shape[1:])}")
    if int(y.max()) >= teacher.num_classes or int(y.min()) < 0:
        raise ValueError(f"labels must lie in [0, {teacher.num_classes}) for these models")
    return budgets


def _accuracies(
    models: dict[str, ImageClassifier], batches: Iterable[tuple[Tensor, Tensor]], n: int
) -> dict[str, float]:
    """Clean top-1 accuracy of every model over ``batches`` (``n`` images in all)."""
    correct = dict.fromkeys(models, 0)
    for xb, yb in batches:
        with torch.no_grad():
            for name, m in models.items():
                correct[name] += int((m(xb).argmax(1) == yb).sum())
    return {name: c / n for name, c in correct.items()}


def _control(
    foreign: ImageClassifier, victims: dict[str, ImageClassifier], x: Tensor, y: Tensor,
    eps: list[float], *, steps: int, batch_size: int, device: torch.device,
) -> list[dict[str, Any]]:
    """The control: fooling rates of ``victims`` on images crafted on ``foreign``, per eps."""
    return [
        {**pooled_fooling_rate(foreign, victims, x, y, e, steps=steps, batch_size=batch_size,
                               device=device), "crafted_on": "foreign"}
        for e in eps
    ]


def _invariance(
    models: dict[str, ImageClassifier], batches: Callable[[], Iterable[tuple[Tensor, Tensor]]],
    seed: int,
) -> dict[str, Any]:
    """Share of predictions unchanged by the trainer's colour jitter, per model."""
    jit = ColorJitter(**JITTER)
    return {
        "jitter": dict(JITTER), "seed": seed,
        "rates": {n: jitter_invariance(m, batches(), jit, seed) for n, m in models.items()},
    }


def _fmt(v: float | None) -> str:
    """A rate for the text table (``n/a`` for None)."""
    return "   n/a" if v is None else f"{v:6.3f}"


def format_transfer(res: dict[str, Any]) -> list[str]:
    """Short text table of :func:`transfer_probes` results (kd vs independent per probe).

    Args:
        res: the ``results`` of :func:`transfer_probes`.

    Returns:
        The table's lines, header first.
    """
    lines = [f"{'probe':<30}{'kd':>8}{'indep.':>8}   kept/n"]
    for row in res["fooling_rate"]:
        r = row["rates"]
        lines.append(f"{'fooling eps=' + eps_label(row['eps']):<30}{_fmt(r['kd']):>8}"
                     f"{_fmt(r['independent']):>8}   {row['kept']}/{row['total']}")
    for row in res["control"] or []:
        r = row["rates"]
        lines.append(f"{'control eps=' + eps_label(row['eps']):<30}{_fmt(r['kd']):>8}"
                     f"{_fmt(r['independent']):>8}   {row['kept']}/{row['total']}")
    a, acc = res["agreement"], res["accuracy"]
    lines.append(f"{'agreement with teacher':<30}{_fmt(a['kd']):>8}{_fmt(a['independent']):>8}")
    lines.append(f"{'clean accuracy':<30}{_fmt(acc['kd']):>8}{_fmt(acc['independent']):>8}"
                 f"   teacher {acc['teacher']:.3f}")
    g = res["gradcam"]
    lines.append(f"{'Grad-CAM closer to kd (share)':<30}{_fmt(g['share_closer_to_kd']):>8}"
                 f"{'':>8}   chance 0.5, ties {g['ties']}")
    if res["invariance"] is not None:
        r = res["invariance"]["rates"]
        lines.append(f"{'jitter invariance':<30}{_fmt(r['kd']):>8}{_fmt(r['independent']):>8}"
                     f"   teacher {r['teacher']:.3f}")
    return lines
