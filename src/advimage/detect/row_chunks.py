"""Near-equal row chunks for the noise-signature detector's model passes.

Hu, Yu et al. (NeurIPS 2019) score an image by how it reacts to noise and to gradient steps;
:class:`~advimage.detect.noise_signature.NoiseSignatureDetector` runs those passes on whole
batches. On a CPU, one convolutional forward(+backward) costs least per image at a few dozen
rows: beyond that the activations no longer fit the core's cache and every elementwise layer
streams them from memory (``bench/README.md``, "Noise-signature detector": 2.36 ms per image
at 64 rows vs 3.00 at 256 for ResNet-20 on one core). :class:`RowChunks` splits a pass over
``b`` rows into ``ceil(b / max_rows)`` near-equal chunks and concatenates the outputs; autograd
runs through it, so gradient passes chunk too.

Rows are independent, so the values are those of one pass up to the summation order the
backend picks for the chunk size (oneDNN gives ResNet-20's rows identical bits at any batch
of 3 rows or more; a GEMM may differ in the last bits).
"""

from __future__ import annotations

import torch
from torch import Tensor

from advimage.attacks.base import Model, check_positive_int
from advimage.utils import chunk_sizes

__all__ = ["RowChunks", "chunk_sizes"]


class RowChunks:
    """``model`` evaluated on near-equal chunks of at most ``max_rows`` rows.

    A plain callable (not an ``nn.Module``): callers freeze and restore the wrapped model
    themselves, and hooks registered on it still see every chunk.

    Args:
        model: Classifier mapping ``(B, ...)`` to ``(B, K)``.
        max_rows: Largest chunk; a pass over at most this many rows is not split (``None``:
            never split).
    """

    def __init__(self, model: Model, max_rows: int | None = 64) -> None:
        if max_rows is not None:
            check_positive_int(max_rows, "max_rows")
        self.model, self.max_rows = model, max_rows

    def __call__(self, x: Tensor) -> Tensor:
        sizes = chunk_sizes(len(x), self.max_rows)
        if len(sizes) == 1:
            return self.model(x)
        return torch.cat([self.model(c) for c in x.split(sizes)])
