"""Plain per-image loops written from the official detect.py (tests compare against them)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def official_steps(model, img, label, lr, radius, cap, target=None):
    """Per-image loop as in the official detect.py: clamp to the box, then to the ball."""
    x = img.clone()
    counter = 0
    while int(model(x).argmax(1)) == label:
        x.requires_grad_(True)
        out = model(x)
        if target is None:
            loss = -F.cross_entropy(out, torch.tensor([label]))
        else:
            loss = F.cross_entropy(out, torch.tensor([target]))
        (g,) = torch.autograd.grad(loss, x)
        x = torch.clamp(x.detach() - lr * g, 0, 1)
        x = torch.clamp(x - img, -radius, radius) + img
        counter += 1
        if counter >= cap:
            break
    return counter
