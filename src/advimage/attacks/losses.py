"""Per-sample attack losses, all oriented so that attacks MAXIMISE them.

* ``ce``: cross-entropy (Goodfellow et al., 2015; Madry et al., 2018).
* ``margin`` / ``cw``: logit margin of Carlini & Wagner (2017), "Towards Evaluating the
  Robustness of Neural Networks": ``max_{j!=y} z_j - z_y`` (targeted ``z_t - max_{j!=t} z_j``);
  positive exactly when the attack succeeds.
* ``dlr``: Difference of Logits Ratio of Croce & Hein (2020), "Reliable evaluation of
  adversarial robustness with an ensemble of diverse parameter-free attacks": the margin divided
  by a spread of the top logits, so it is invariant to shifting and rescaling the logits.

Each function takes ``logits (B, K)``, true labels ``y (B,)`` and optional ``target (B,)`` and
returns a ``(B,)`` tensor; targeted forms push towards ``target``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

__all__ = ["LOSSES", "ce_loss", "dlr_loss", "get_loss", "is_success", "margin_loss"]

LossFn = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]

# Added to DLR denominators (logit units) so equal top logits do not divide by zero.
_DLR_EPS = 1e-12


def _logit_at(logits: Tensor, labels: Tensor) -> Tensor:
    return logits.gather(1, labels.view(-1, 1)).squeeze(1)  # (B,)


def _max_other(logits: Tensor, labels: Tensor) -> Tensor:
    """``max_{j != label} z_j`` per row, shape ``(B,)``."""
    masked = logits.scatter(1, labels.view(-1, 1), float("-inf"))  # (B, K)
    return masked.amax(dim=1)


def ce_loss(logits: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """Cross-entropy to the true class (untargeted) or minus cross-entropy to ``target``."""
    if target is None:
        return F.cross_entropy(logits, y, reduction="none")
    return -F.cross_entropy(logits, target, reduction="none")


def margin_loss(logits: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """Carlini-Wagner logit margin; ``> 0`` iff the sample is misclassified (or hits target)."""
    if target is None:
        return _max_other(logits, y) - _logit_at(logits, y)
    return _logit_at(logits, target) - _max_other(logits, target)


def dlr_loss(logits: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """Difference of Logits Ratio (Croce & Hein, 2020), untargeted or targeted.

    Untargeted: ``-(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3)``.
    Targeted:   ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``,
    where ``z_pi1 >= z_pi2 >= ...`` are the sorted logits. Needs 3 (4 targeted) classes.
    """
    k = logits.shape[1]
    need = 3 if target is None else 4
    if k < need:
        kind = "targeted" if target is not None else "untargeted"
        raise ValueError(f"{kind} DLR loss needs at least {need} classes, got {k}")
    top = logits.topk(need, dim=1).values  # (B, need), descending
    z_y = _logit_at(logits, y)
    if target is None:
        return -(z_y - _max_other(logits, y)) / (top[:, 0] - top[:, 2] + _DLR_EPS)
    z_t = _logit_at(logits, target)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _DLR_EPS)


LOSSES: dict[str, LossFn] = {
    "ce": ce_loss,
    "margin": margin_loss,
    "cw": margin_loss,
    "dlr": dlr_loss,
}


def get_loss(name: str) -> LossFn:
    """Look up a loss by name; ``ValueError`` listing the names for an unknown one."""
    key = str(name).lower()
    if key not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of: {', '.join(sorted(LOSSES))}")
    return LOSSES[key]


def is_success(logits: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """Boolean ``(B,)``: misclassified (untargeted) or classified as ``target`` (targeted)."""
    pred = logits.argmax(dim=1)
    return pred != y if target is None else pred == target

