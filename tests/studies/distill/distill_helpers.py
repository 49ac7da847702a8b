"""Helpers shared by the distillation tests (imported by module name, like harness_helpers)."""

from __future__ import annotations

import copy

import torch

from advimage.models import ImageClassifier


def perturbed_copy(model: ImageClassifier, seed: int, scale: float) -> ImageClassifier:
    """A different network that still classifies well: weights + scale * std * noise."""
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * p.std() * torch.randn(p.shape, generator=gen))
    return other.eval()
