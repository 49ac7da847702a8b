"""Paired bootstrap of an accuracy gain, as the cache studies report it (Orhan, 2018, "A Simple
Cache Model for Image Recognition": cache minus baseline on the same test images).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["paired_bootstrap"]


def paired_bootstrap(correct_a: Any, correct_b: Any, n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict[str, float]:
    """Gain ``acc(a) - acc(b)`` on the same images with a paired percentile bootstrap.

    Resamples IMAGES (both models' outcomes together), so the interval reflects only the
    disagreement between the two models, not the difficulty of the test set.

    Args:
        correct_a, correct_b: ``(N,)`` booleans (or 0/1) per image for the two models.
        n_boot: bootstrap resamples.
        seed: seed of the resampling.
        level: coverage of the interval (0.95 = 2.5th and 97.5th percentiles).

    Returns:
        ``{"gain", "lo", "hi", "n", "n_boot"}``; gain in accuracy units (0.01 = 1 point).
    """
    a = np.asarray(correct_a, dtype=np.float64).ravel()
    b = np.asarray(correct_b, dtype=np.float64).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"correct_a and correct_b must be equal non-empty (N,) arrays, got "
                         f"{a.shape} and {b.shape}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    d = a - b  # (N,) per-image difference in {-1, 0, 1}
    idx = np.random.default_rng(seed).integers(0, d.size, size=(n_boot, d.size))  # (R, N)
    gains = d[idx].mean(axis=1)  # (R,)
    tail = (1.0 - level) / 2 * 100  # percent
    lo, hi = np.percentile(gains, [tail, 100 - tail])
    return {"gain": float(d.mean()), "lo": float(lo), "hi": float(hi), "n": int(d.size),
            "n_boot": n_boot}
