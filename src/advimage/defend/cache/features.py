"""Cache keys ``phi(x)`` of Orhan (2018), "A Simple Cache Model for Image Recognition".

``phi(x)`` is the concatenation of the flattened outputs of a few named late layers, the
whole vector L2-normalized, so that the cache's inner products are cosine similarities.
Logits come from the same forward pass (one network evaluation per image).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from advimage.models.classifier import ImageClassifier
from advimage.validation import check_images, check_labels

__all__ = ["collect_keys", "features_and_logits"]


def features_and_logits(
    model: ImageClassifier, x: Tensor, layers: Sequence[str]
) -> tuple[Tensor, Tensor]:
    """Run ``model`` once on ``x`` ``(B, C, H, W)``; return ``(logits (B, K), phi (B, D))``.

    ``phi`` rows have unit L2 norm (a zero activation vector stays zero). Gradients flow to
    ``x`` under the caller's grad mode.
    """
    logits, captured = model.forward_with_features(x, layers)
    flat = torch.cat([captured[name].flatten(1) for name in layers], dim=1)  # (B, D)
    return logits, F.normalize(flat, dim=1)


@torch.no_grad()
def collect_keys(
    model: ImageClassifier, layers: Sequence[str], batches: Iterable[tuple[Tensor, Tensor]],
    *, flip: bool = False,
) -> tuple[Tensor, Tensor]:
    """Embed every ``(x, y)`` batch: keys ``(N, D)`` float16 on the model's device, labels ``(N,)``.

    With ``flip`` each image's horizontal mirror is stored too (``2N`` keys, mirrors after
    their batch's originals).
    """
    device = next(iter(model.parameters()), torch.zeros(())).device
    was_training = model.training
    model.eval()
    keys: list[Tensor] = []
    labels: list[Tensor] = []
    try:
        for x, y in batches:
            check_images(x)
            check_labels(y, x.shape[0], model.num_classes)
            x, y = x.to(device), y.to(device)
            views = (x, x.flip(-1)) if flip else (x,)  # flip the width axis
            for view in views:
                _, phi = features_and_logits(model, view, layers)
                keys.append(phi.to(torch.float16))  # (B, D)
                labels.append(y)
    finally:
        model.train(was_training)
    if not keys:
        raise ValueError("the training data for the cache is empty")
    return torch.cat(keys), torch.cat(labels)
