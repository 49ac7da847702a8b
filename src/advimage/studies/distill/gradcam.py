"""Grad-CAM localisation probe of Ojha et al. (NeurIPS 2023) and its overlay grid.

"What Knowledge Gets Distilled in Knowledge Distillation?" asks whether a distilled student
looks where its teacher looks: for each image, is the teacher's Grad-CAM (Selvaraju et al., ICCV
2017) of the true class closer (cosine) to the KD student's map than to an independent
student's? Chance is 50%. This module holds the maps (:func:`gradcam`), their comparison
(:func:`gradcam_similarity`), the default layer (:func:`last_conv_layer`), the probe batched
over an image set (:func:`gradcam_probe`) and the PNG overlay grid (:func:`save_gradcam_grid`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advimage.eval.plots import save_png, subplots
from advimage.models import ImageClassifier
from advimage.validation import check_images, check_labels

__all__ = [
    "gradcam",
    "gradcam_similarity",
    "last_conv_layer",
    "resolve_cam_layers",
    "gradcam_probe",
    "save_gradcam_grid",
]

ROLES = ("teacher", "kd", "independent")
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


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
        with torch.no_grad():
            class_idx = teacher(x).argmax(1)  # (B,)
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


def last_conv_layer(model: ImageClassifier) -> str:
    """Name of the last module (in execution order) giving a spatial ``(B, C, h, w)`` map, h*w > 1.

    Pooling layers are skipped, so this is the last convolutional feature map: ``layer3`` for the
    CIFAR ResNets, the ReLU after the last conv of ``features`` for the VGGs, ``relu2`` for
    small-cnn. Found with one forward pass of a zero image through hooks on every submodule.
    """
    if not isinstance(model, ImageClassifier):
        raise ValueError(f"Grad-CAM needs an ImageClassifier, got {type(model).__name__}")
    order: list[str] = []

    def make_hook(name: str, module: nn.Module) -> Callable[[nn.Module, object, object], None]:
        def hook(_m: nn.Module, _i: object, out: object) -> None:
            if isinstance(out, Tensor) and out.dim() == 4 and out.shape[2] * out.shape[3] > 1 \
                    and not isinstance(module, _POOLS):
                order.append(name)
        return hook

    handles = [m.register_forward_hook(make_hook(n, m)) for n, m in model.net.named_modules() if n]
    ref: Tensor = next(iter(model.parameters()), model.mean)  # type: ignore[assignment]
    try:
        with torch.no_grad():
            model.eval()
            model(torch.zeros((1, *model.input_shape), dtype=ref.dtype, device=ref.device))
    finally:
        for h in handles:
            h.remove()
    if not order:
        raise ValueError(f"{model.arch} has no spatial feature map for Grad-CAM; pass cam_layers")
    return order[-1]


def resolve_cam_layers(
    models: Sequence[ImageClassifier], cam_layers: str | Sequence[str] | None
) -> list[str]:
    """One Grad-CAM layer per model: ``cam_layers`` as given, else each :func:`last_conv_layer`."""
    if cam_layers is None:
        return [last_conv_layer(m) for m in models]
    names = [cam_layers] if isinstance(cam_layers, str) else list(cam_layers)
    if len(names) != len(models):
        raise ValueError(f"cam_layers takes {len(models)} names (teacher, kd, independent), "
                         f"got {names}")
    return names


def gradcam_probe(
    teacher: ImageClassifier, kd: ImageClassifier, independent: ImageClassifier,
    batches: Iterable[tuple[Tensor, Tensor]], cam_layers: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Grad-CAM of the true class over ``batches`` of ``(x, y)``: share closer to KD's map.

    Returns:
        JSON-able dict: ``layers`` by role, ``class`` (``"true"``), ``share_closer_to_kd``
        (strictly closer; chance 0.5), ``ties`` (images with equal cosines), ``mean_cosine``
        of the teacher's map to each student's, ``n`` images.
    """
    layers = resolve_cam_layers((teacher, kd, independent), cam_layers)
    cos_kd, cos_ind = [], []
    for xb, yb in batches:
        out = gradcam_similarity(teacher, kd, independent, xb, layers, class_idx=yb)
        cos_kd.append(out["kd"].detach().cpu())  # type: ignore[attr-defined]
        cos_ind.append(out["independent"].detach().cpu())  # type: ignore[attr-defined]
    if not cos_kd:
        raise ValueError("gradcam_probe needs at least one batch of images")
    ck, ci = torch.cat(cos_kd), torch.cat(cos_ind)  # (N,), (N,)
    return {
        "layers": dict(zip(ROLES, layers, strict=True)),
        "class": "true",
        "share_closer_to_kd": (ck > ci).float().mean().item(),
        "ties": int((ck == ci).sum()),
        "mean_cosine": {"kd": ck.mean().item(), "independent": ci.mean().item()},
        "n": len(ck),
    }


def save_gradcam_grid(
    teacher: ImageClassifier,
    kd: ImageClassifier,
    independent: ImageClassifier,
    x: Tensor,
    y: Tensor,
    path: str | Path,
    *,
    cam_layers: Sequence[str] | None = None,
    n: int = 6,
    classes: Sequence[str] | None = None,
) -> Path:
    """PNG grid, one row per image: input, then teacher / KD / independent true-class Grad-CAMs.

    The first ``n`` images of ``x`` (N, C, H, W) in [0, 1] are drawn; each map is scaled to a
    peak of 1 and laid over its input (jet colour map, half transparent). Returns the path.
    """
    check_images(x)
    check_labels(y, len(x))
    models = (teacher, kd, independent)
    layers = resolve_cam_layers(models, cam_layers)
    dev = next(teacher.parameters()).device
    xb, yb = x[:n].to(dev), y[:n].to(dev)  # (n, C, H, W), (n,)
    size = (int(x.shape[-2]), int(x.shape[-1]))
    maps = [gradcam(m, xb, ln, yb, size).detach().cpu() for m, ln in zip(models, layers,
                                                                          strict=True)]
    imgs = xb.detach().cpu().permute(0, 2, 3, 1).numpy()  # (n, H, W, C)
    titles = ("input", f"teacher ({layers[0]})", f"KD ({layers[1]})",
              f"independent ({layers[2]})")
    fig, axes = subplots(len(xb), 4, figsize=(8, 2 * len(xb)), squeeze=False)
    for i in range(len(xb)):
        img = imgs[i] if imgs.shape[-1] == 3 else imgs[i, :, :, 0]
        label = classes[int(yb[i])] if classes else str(int(yb[i]))
        for j in range(4):
            ax = axes[i, j]
            ax.imshow(img, cmap=None if img.ndim == 3 else "gray", vmin=0, vmax=1)
            if j:
                cam = maps[j - 1][i]
                cam = cam / cam.max() if cam.max() > 0 else cam
                ax.imshow(cam.numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[j], fontsize=8)
        axes[i, 0].set_ylabel(label, fontsize=8)
    return save_png(fig, path, dpi=100)  # 100 dpi: 800 px wide, 200 px per row
