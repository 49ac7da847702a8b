"""Out-of-memory as a one-line error that names the batch size.

A batch of 224-pixel images under a multi-step attack holds every activation of a forward and
backward pass at once; when it does not fit, PyTorch raises ``torch.cuda.OutOfMemoryError``
(CUDA), ``MemoryError`` or a ``RuntimeError`` from the CPU allocator, with pages of allocator
detail. :func:`oom_guard` turns each of them into an
:class:`~advimage.errors.EnvironmentFailureError` (exit 1) that says which batch size failed
and which option lowers it. Nothing is retried: halving the batch would change the per-batch
seeds and the results' bit-for-bit reproducibility.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from advimage.errors import EnvironmentFailureError

__all__ = ["is_out_of_memory", "oom_guard"]

_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory")


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocator failure (CUDA, MPS or CPU)."""
    if isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(m in text for m in _MARKERS)


@contextmanager
def oom_guard(batch_size: int, option: str = "--batch-size") -> Iterator[None]:
    """Re-raise out-of-memory inside the block as one line naming ``batch_size``.

    Args:
        batch_size: the images per batch of the failing work.
        option: how the user lowers it (``--batch-size``, ``data.batch_size``).

    Raises:
        EnvironmentFailureError: ``out of memory at batch size N; lower OPTION``.
    """
    try:
        yield
    except (RuntimeError, MemoryError) as err:
        if not is_out_of_memory(err):
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise EnvironmentFailureError(
            f"out of memory at batch size {batch_size}; lower {option}") from None
