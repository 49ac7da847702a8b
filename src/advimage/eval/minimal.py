"""Minimal adversarial budget per image: the smallest L-inf (or L2) radius an attack needs.

Robust accuracy at a few budgets hides how much a defense moves the needed perturbation; the
per-image smallest fooling budget (e.g. Carlini et al., 2019, "On Evaluating Adversarial
Robustness", Sec. 5) shows it. :func:`minimal_eps` ascends a grid of budgets and attacks, at each
budget, only the images nothing smaller has fooled yet (so images that fall early cost nothing
more). It assumes nothing about monotonicity: an image's value is the first grid budget at which
the attack fooled it. Attacks may be crafted on a surrogate and judged on another model
(transfer), and the judge may be randomized or expensive (one forward per stage).

A minimal-norm attack (FMN, DDN, DeepFool: :class:`advimage.attacks.MinimalNormAttack`) gives
the same per-image values from a single run, without a grid (:func:`minimal_norms`), and
:func:`robust_curve` turns either into the whole robust-accuracy-vs-eps curve: an image is
robust at ``eps`` exactly when its value exceeds ``eps`` (Pintor et al., NeurIPS 2021, Fig. 3).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from advimage.attacks.base import Attack
from advimage.attacks.minimal_norm import MinimalNormAttack
from advimage.validation import check_images, check_labels

__all__ = ["minimal_eps", "minimal_norms", "robust_curve", "summarize_minimal"]


def _predict(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(c).argmax(1) for c in x.split(batch_size)])  # (B,)


def minimal_eps(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    make_attack: Callable[[float], Attack],
    grid: Sequence[float],
    *,
    judge: nn.Module | None = None,
    batch_size: int = 256,
) -> Tensor:
    """Per image, the smallest budget of ``grid`` at which the attack fools ``judge``.

    Args:
        model: what the attack is run on (white-box target or transfer surrogate).
        x: images ``(B, C, H, W)`` in [0, 1]; y: labels ``(B,)``.
        make_attack: budget -> attack (e.g. ``lambda e: PGD(eps=e, steps=20)``).
        grid: increasing budgets, in the attack norm's units.
        judge: the model whose prediction decides success (default ``model``).
        batch_size: images per forward when judging.

    Returns:
        ``(B,)`` float tensor on ``x``'s device: 0 for images the judge misclassifies clean,
        ``inf`` for images no budget of the grid fools, else the first fooling budget.
    """
    check_images(x)
    check_labels(y, len(x))
    values = [float(e) for e in grid]
    if not values or any(not e > 0 for e in values) or values != sorted(set(values)):
        raise ValueError(f"grid must be strictly increasing positive budgets, got {list(grid)}")
    judge = model if judge is None else judge
    need = torch.full_like(y, float("inf"), dtype=x.dtype)  # (B,)
    need[_predict(judge, x, batch_size) != y] = 0.0
    for e in values:
        todo = torch.isinf(need).nonzero().flatten()  # (b,) still unfooled
        if todo.numel() == 0:
            break
        adv = make_attack(e)(model, x[todo], y[todo])  # (b, C, H, W)
        fooled = _predict(judge, adv, batch_size) != y[todo]
        need[todo[fooled]] = e
    return need


def summarize_minimal(need: Tensor, scale: float = 255.0) -> dict[str, float]:
    """Median / mean (over fooled images) of :func:`minimal_eps` output, times ``scale``."""
    finite = need[torch.isfinite(need)]
    return {
        "median": float(need.median()) * scale,  # inf when over half survive every budget
        "mean_fooled": float(finite.mean()) * scale if finite.numel() else float("nan"),
        "never_fooled": int(torch.isinf(need).sum()),
        "clean_wrong": int((need == 0).sum()),
        "n": int(need.numel()),
    }


def minimal_norms(
    model: nn.Module, x: Tensor, y: Tensor, attack: MinimalNormAttack, *, batch_size: int = 256
) -> Tensor:
    """Per image, the norm of the smallest fooling perturbation one minimal-norm run finds.

    Args:
        model: the attacked classifier.
        x: images ``(B, C, H, W)`` in the attack's bounds; y: labels ``(B,)``.
        attack: e.g. ``FMN(norm="l2")``; its ``norm`` sets the units of the values.
        batch_size: images per attack call.

    Returns:
        ``(B,)`` float tensor on ``x``'s device, in the format of :func:`minimal_eps`: 0 for
        images ``model`` misclassifies clean, ``inf`` where the attack failed, else the norm.
    """
    if not isinstance(attack, MinimalNormAttack):
        raise ValueError(
            f"minimal_norms needs a minimal-norm attack (fmn, ddn, deepfool), got {attack.name!r}"
        )
    check_images(x)
    check_labels(y, len(x))
    parts = [
        attack.run(model, xb, yb).norms.to(x.device)
        for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True)
    ]
    need = torch.cat(parts).to(x.dtype)  # (B,)
    need[_predict(model, x, batch_size) != y] = 0.0
    return need


def robust_curve(need: Tensor, eps: Sequence[float]) -> list[float]:
    """Robust accuracy at each budget of ``eps``: the fraction of images whose minimal budget
    (from :func:`minimal_norms` or :func:`minimal_eps`) exceeds it.

    Images misclassified clean (value 0) are never robust; at budget 0 the curve would be the
    clean accuracy.
    """
    values = [float(e) for e in eps]
    if any(math.isnan(e) or e < 0 for e in values):
        raise ValueError(f"eps must be budgets >= 0, got {list(eps)}")
    if need.numel() == 0:
        raise ValueError("robust_curve needs at least one image")
    return [float((need > e).float().mean()) for e in values]
