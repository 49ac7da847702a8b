"""Backward Pass Differentiable Approximation for non-differentiable preprocessing.

Athalye, Carlini & Wagner (2018), "Obfuscated Gradients Give a False Sense of Security":
a defense that quantizes, JPEG-compresses or otherwise breaks gradients is attacked by running
the real transform forward and a differentiable ``surrogate`` (often the identity, since such
transforms satisfy ``g(x) ~ x``) backward. Wrap the preprocessing inside the model::

    model = nn.Sequential(BPDA(quantize), classifier)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["BPDA"]


class BPDA(nn.Module):
    """Forward is ``module(x)``; backward is the gradient of ``surrogate(x)`` (identity default).

    Computes ``s + (module(x) - s).detach()`` with ``s = surrogate(x)``: the value equals
    ``module(x)`` and autograd only sees ``s``. ``module`` runs without autograd, so it may be
    any tensor function (``torch.round``, a JPEG codec, ...).

    Args:
        module: The non-differentiable transform (``nn.Module`` or callable).
        surrogate: Differentiable approximation used for gradients; ``None`` = identity.
    """

    def __init__(
        self,
        module: Callable[[Tensor], Tensor],
        surrogate: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        if not callable(module):
            raise ValueError(f"BPDA module must be callable, got {type(module).__name__}")
        if surrogate is not None and not callable(surrogate):
            raise ValueError(f"BPDA surrogate must be callable, got {type(surrogate).__name__}")
        self.module = module
        self.surrogate = surrogate

    def forward(self, x: Tensor) -> Tensor:
        s = x if self.surrogate is None else self.surrogate(x)
        with torch.no_grad():
            out = self.module(x)
        if out.shape != s.shape:
            raise ValueError(
                f"BPDA module output {tuple(out.shape)} and surrogate output "
                f"{tuple(s.shape)} must have the same shape"
            )
        return s + (out - s).detach()
