"""Per-probe computations of Ojha et al. (NeurIPS 2023): what a student inherits.

"What Knowledge Gets Distilled in Knowledge Distillation?" compares a distilled student with
an independent one on: transfer of the teacher's adversarial vulnerability (:func:`fooling_rate`,
pooled over chunks by :func:`pooled_fooling_rate`), top-1 agreement (:func:`agreement`),
invariance to colour jitter (:func:`jitter_invariance`) and localisation (Grad-CAM, in
:mod:`advimage.studies.distill.gradcam`; :func:`gradcam` and :func:`gradcam_similarity` are
re-exported here). All functions take models mapping images in [0, 1] to logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from advimage.attacks import PGD
from advimage.studies.distill.gradcam import gradcam, gradcam_similarity
from advimage.validation import check_images, check_labels

__all__ = [
    "fooling_rate",
    "pooled_fooling_rate",
    "agreement",
    "gradcam",
    "gradcam_similarity",
    "jitter_invariance",
    "iter_batches",
]


def iter_batches(
    x: Tensor, y: Tensor, batch_size: int, device: str | torch.device = "cpu"
) -> Iterator[tuple[Tensor, Tensor]]:
    """Consecutive ``(x, y)`` chunks of ``batch_size`` images, moved to ``device``."""
    if batch_size < 1:  # checked now, not at the first next()
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return (  # (b, C, H, W), (b,)
        (x[i : i + batch_size].to(device), y[i : i + batch_size].to(device))
        for i in range(0, len(x), batch_size)
    )


def _predict(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(1)  # (B,)


def fooling_rate(
    teacher: nn.Module,
    students: Mapping[str, nn.Module] | Sequence[nn.Module],
    x: Tensor,
    y: Tensor,
    eps: float,
    steps: int = 5,
) -> dict[str, object]:
    """Share of teacher-fooling adversarial images that also change each student's prediction.

    I-FGSM attacks the teacher; only images the teacher classifies correctly and the attack
    fools are kept. For each student, the rate is the share of kept images whose student
    prediction differs between the clean and adversarial image.

    Returns:
        ``{"kept": int, "total": int, "rates": {name: float}}``; a rate is NaN if nothing is kept.
    """
    check_images(x)
    check_labels(y, len(x))
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    named = dict(students) if isinstance(students, Mapping) else {
        str(i): s for i, s in enumerate(students)
    }
    teacher.eval()
    # I-FGSM (Kurakin et al., 2017) = the engine's PGD without random start, step 2.5*eps/steps
    ifgsm = PGD(eps=eps, norm="linf", steps=steps, random_start=False, early_stop=False)
    adv = ifgsm(teacher, x, y)  # (B, C, H, W)
    keep = (_predict(teacher, x) == y) & (_predict(teacher, adv) != y)  # (B,)
    rates: dict[str, float] = {}
    for name, student in named.items():
        student.eval()
        if not keep.any():
            rates[name] = float("nan")
            continue
        changed = _predict(student, x[keep]) != _predict(student, adv[keep])
        rates[name] = changed.float().mean().item()
    return {"kept": int(keep.sum()), "total": len(x), "rates": rates}


def _num(v: float) -> float | None:
    """JSON-safe float: NaN (no kept images) becomes ``None``."""
    return None if math.isnan(v) else float(v)


def pooled_fooling_rate(
    source: nn.Module,
    students: Mapping[str, nn.Module],
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    steps: int = 5,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """:func:`fooling_rate` over chunks of ``batch_size`` images, rates pooled over all kept.

    Memory stays bounded by the chunk; the result equals one :func:`fooling_rate` call on all
    of ``x`` (the attack is per-image). Chunks are moved to ``device``; models must be there.

    Returns:
        JSON-able ``{"eps", "kept", "total", "rates": {name: float | None}}``; a rate is
        ``None`` when no image is kept.
    """
    check_images(x)
    check_labels(y, len(x))
    kept, changed = 0, dict.fromkeys(students, 0)
    for xb, yb in iter_batches(x, y, batch_size, device):
        out = fooling_rate(source, students, xb, yb, eps=eps, steps=steps)
        k = int(out["kept"])  # type: ignore[call-overload]
        kept += k
        for name, rate in out["rates"].items():  # type: ignore[attr-defined]
            if k:
                changed[name] += round(rate * k)  # the chunk's count of changed predictions
    rates = {n: _num(c / kept if kept else float("nan")) for n, c in changed.items()}
    return {"eps": eps, "kept": kept, "total": len(x), "rates": rates}


def agreement(
    teacher: nn.Module, student: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]
) -> float:
    """Share of images on which teacher and student give the same top-1 class."""
    teacher.eval()
    student.eval()
    same, seen = 0, 0
    for x, _y in batches:
        same += int((_predict(teacher, x) == _predict(student, x)).sum())
        seen += len(x)
    if seen == 0:
        raise ValueError("agreement needs at least one image")
    return same / seen


def jitter_invariance(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    jitter: Callable[[Tensor, torch.Generator], Tensor],
    seed: int = 0,
) -> float:
    """Share of images whose top-1 class is unchanged by ``jitter`` (e.g. ``ColorJitter``).

    ``jitter(x, generator) -> x`` follows advimage's augmentation convention; one generator
    seeded with ``seed`` draws every batch's jitter, so the probe is reproducible.
    """
    model.eval()
    gen = torch.Generator().manual_seed(int(seed))
    same, seen = 0, 0
    for x, _y in batches:
        same += int((_predict(model, x) == _predict(model, jitter(x, gen))).sum())
        seen += len(x)
    if seen == 0:
        raise ValueError("jitter_invariance needs at least one image")
    return same / seen
