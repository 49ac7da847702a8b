"""Input checks shared by every entry point: one-line ``ValueError`` naming the problem.

Every public function that takes images or labels calls these first, so a bad tensor is
rejected at the boundary instead of failing deep inside torch.
"""

from __future__ import annotations

import numbers

import torch

__all__ = ["check_batch_size", "check_images", "check_labels", "check_shard", "parse_fraction"]


def check_images(
    x: object,
    name: str = "x",
    bounds: tuple[float, float] = (0.0, 1.0),
    ndim: int = 4,
) -> torch.Tensor:
    """Check a batch of images: a floating tensor of ``ndim`` dims, finite, inside ``bounds``.

    Returns the tensor unchanged so calls can be chained.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(
            f"{name} must be a floating tensor in [{bounds[0]}, {bounds[1]}], got dtype {x.dtype}"
        )
    if x.dim() != ndim:
        shape = "NCHW" if ndim == 4 else f"{ndim}-d"
        raise ValueError(f"{name} must be a {shape} tensor, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if not torch.isfinite(x).all():
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {n_bad} NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    tol = 1e-6
    if lo < bounds[0] - tol or hi > bounds[1] + tol:
        raise ValueError(
            f"{name} must lie in [{bounds[0]}, {bounds[1]}], got values in [{lo:.4g}, {hi:.4g}]"
        )
    return x


def check_labels(
    y: object, n: int, num_classes: int | None = None, name: str = "y"
) -> torch.Tensor:
    """Check integer class labels: shape ``(n,)``, in ``[0, num_classes)`` when known."""
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of class indices, got {type(y).__name__}")
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
        raise ValueError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    if y.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the images, got {tuple(y.shape)}")
    if n and int(y.min()) < 0:
        raise ValueError(f"{name} has negative labels (min {int(y.min())})")
    if n and num_classes is not None and int(y.max()) >= num_classes:
        raise ValueError(f"{name} has label {int(y.max())} out of range for {num_classes} classes")
    return y


def check_batch_size(value: object, name: str = "batch_size") -> int:
    """``value`` as an int when it is an integer >= 1 (``batch_size`` of any library function).

    Raises:
        ValueError: in one line, naming ``name`` (a zero batch size would divide by zero).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def parse_fraction(text: str | float | int, name: str = "value") -> float:
    """Parse ``"8/255"``, ``"0.03"`` or a number into a float (CLI and configs use it for eps)."""
    if isinstance(text, (int, float)):
        return float(text)
    s = str(text).strip()
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(s)
    except (ValueError, ZeroDivisionError):
        raise ValueError(
            f"{name} must be a number or a fraction like 8/255, got {text!r}"
        ) from None
    return value


def check_shard(shard: tuple[int, int] | None) -> tuple[int, int] | None:
    """``shard`` as given when it is None or ``(i, n)`` with ints 0 <= i < n: the i-th of n
    processes sharing one run (``advimage run`` batches, ``advimage eval detection`` attacks).

    Raises:
        ValueError: anything else, in one line.
    """
    if shard is None:
        return None
    try:
        i, n = shard
    except (TypeError, ValueError):
        raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard!r}") from None
    if not (isinstance(i, int) and isinstance(n, int) and 0 <= i < n):
        raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard!r}")
    return shard
