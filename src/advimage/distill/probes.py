"""Probes of what a student inherits from its teacher (Ojha et al., NeurIPS 2023).

"What Knowledge Gets Distilled in Knowledge Distillation?" compares a distilled student with
an independent one on: transfer of the teacher's adversarial vulnerability (:func:`fooling_rate`),
top-1 agreement (:func:`agreement`), localisation (Grad-CAM, Selvaraju et al., ICCV 2017:
:func:`gradcam`, :func:`gradcam_similarity`) and invariance to colour jitter
(:func:`jitter_invariance`). All functions take models mapping images in [0, 1] to logits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advimage.attacks import PGD
from advimage.validation import check_images, check_labels

__all__ = [
    "fooling_rate",
    "agreement",
    "gradcam",
    "gradcam_similarity",
    "jitter_invariance",
]


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


def gradcam(
    model: nn.Module,
    x: Tensor,
    layer: str,
    class_idx: int | Tensor | None = None,
    size: tuple[int, int] | None = None,
) -> Tensor:
    """Grad-CAM maps ``(B, h, w)``: ``relu(sum_k alpha_k A_k)``, ``alpha_k`` = mean of dy_c/dA_k.

    Args:
        model: an ``ImageClassifier`` (``forward_with_features``); ``layer`` names a conv output.
        class_idx: target class (int, ``(B,)`` tensor, or ``None`` for the predicted class).
        size: ``(H, W)`` to bilinearly upsample the maps to (e.g. the input size); ``None`` keeps
            the layer's resolution.
    """
    if not hasattr(model, "forward_with_features"):
        raise ValueError(
            f"gradcam needs an ImageClassifier (forward_with_features), got {type(model).__name__}"
        )
    model.eval()
    x = x.detach()
    with torch.enable_grad():
        logits, feats = model.forward_with_features(x, [layer])  # type: ignore[operator]
        acts = feats[layer]  # (B, C, h, w)
        if acts.dim() != 4:
            raise ValueError(
                f"Grad-CAM needs a (B, C, H, W) layer; {layer!r} gives {tuple(acts.shape)}"
            )
        if class_idx is None:
            target = logits.argmax(1)
        elif isinstance(class_idx, Tensor):
            target = class_idx.to(logits.device).long().reshape(-1)
        else:
            target = torch.full_like(logits[:, 0], int(class_idx), dtype=torch.long)
        if target.numel() != len(x) or target.min() < 0 or target.max() >= logits.shape[1]:
            raise ValueError(f"class_idx must give one class in [0, {logits.shape[1]}) per image")
        score = logits.gather(1, target[:, None]).sum()
        (grads,) = torch.autograd.grad(score, acts)  # (B, C, h, w)
    weights = grads.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    cam = F.relu((weights * acts.detach()).sum(1))  # (B, h, w)
    if size is not None:
        cam = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return cam


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=1e-12)  # (B,)


def gradcam_similarity(
    teacher: nn.Module,
    kd_student: nn.Module,
    independent: nn.Module,
    x: Tensor,
    layers: str | Sequence[str],
    class_idx: int | Tensor | None = None,
) -> dict[str, object]:
    """Cosine similarity of the teacher's Grad-CAM to each student's (maps at input resolution).

    ``layers``: one layer name for all three models, or ``(teacher, kd, independent)`` names.
    ``class_idx`` defaults to the teacher's predicted class, used for all three models.

    Returns:
        ``{"kd": (B,), "independent": (B,), "share_closer_to_kd": float}`` where the share
        counts images whose teacher map is strictly closer (cosine) to the KD student's.
    """
    names = [layers] * 3 if isinstance(layers, str) else list(layers)
    if len(names) != 3:
        raise ValueError(f"layers must be one name or three (teacher, kd, independent): {names}")
    if class_idx is None:
        teacher.eval()
        class_idx = _predict(teacher, x)
    size = (int(x.shape[-2]), int(x.shape[-1]))
    maps = [
        gradcam(m, x, name, class_idx, size)
        for m, name in zip((teacher, kd_student, independent), names, strict=True)
    ]
    cos_kd, cos_ind = _cosine(maps[0], maps[1]), _cosine(maps[0], maps[2])
    return {
        "kd": cos_kd,
        "independent": cos_ind,
        "share_closer_to_kd": (cos_kd > cos_ind).float().mean().item(),
    }


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
