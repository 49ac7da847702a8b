"""Evaluation glue for the cache model of Orhan (2018), "A Simple Cache Model for Image
Recognition".

- the ``cache`` defense of the run harness (``defenses: [{name: cache, options: {path: ...}}]``
  and ``advimage eval robust --defense cache:PATH``), with an optional BPDA backward pass
  through a lower-temperature copy: with a large theta, ``exp(theta cos)`` saturates and
  plain gradients understate the attacker (Athalye, Carlini & Wagner, 2018);
- ``paired_bootstrap``: the 95% interval of an accuracy gain measured on the same images;
- the CLI's ``--defense NAME[:PATH][,key=value]`` parser.

The ``advimage demo`` section lives in :mod:`advimage.defend.cache_demo`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from advimage.attacks.bpda import BPDA
from advimage.defend.cache import CacheModel, check_theta
from advimage.defend.cache_robust import ClassTopMCache
from advimage.eval.defenses import register_defense
from advimage.models.classifier import ImageClassifier

__all__ = ["CacheDefense", "build_cache_defense", "paired_bootstrap", "parse_defense_arg"]

_OPTIONS = {"path": None, "theta": None, "lam": None, "mode": None, "k": None, "nprobe": None,
            "bpda_theta": None}


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


class CacheDefense(nn.Module):
    """A cache model as a harness defense: log-probabilities, flags for the masking checks.

    Args:
        cache: the :class:`CacheModel` evaluated forward.
        bpda_theta: if set, gradients come from a copy with this (lower) inverse temperature
            (BPDA: the value is the real cache's, the backward pass the surrogate's).
    """

    is_randomized = False

    def __init__(self, cache: CacheModel, bpda_theta: float | None = None) -> None:
        super().__init__()
        self.cache = cache
        self.bpda_theta = None if bpda_theta is None else check_theta(bpda_theta)
        if self.bpda_theta is None:
            self.forward_fn: nn.Module = cache
        else:
            # FAISS mode: a top-k copy would give classes without candidates log p = -inf
            # and confident images a zero gradient, so the surrogate keeps each class's
            # nearest keys (exact search; only K m keys per query enter the backward pass).
            surrogate: nn.Module = (
                ClassTopMCache(cache, m=20, theta=self.bpda_theta) if cache.mode == "faiss"
                else cache.surrogate(self.bpda_theta))
            self.forward_fn = BPDA(cache, surrogate)
        self.uses_bpda = self.bpda_theta is not None
        # exact mode is differentiable; FAISS's neighbour search and BPDA replace gradients
        self.is_differentiable = cache.is_differentiable and not self.uses_bpda

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_fn(x)  # (B, K) log-probabilities


@register_defense("cache")
def build_cache_defense(model: nn.Module, options: Mapping[str, Any]) -> nn.Module:
    """The ``cache`` defense: a saved cache (``advimage cache tune``) around ``model``.

    Options: ``path`` (required; the cache written by ``advimage cache build|tune``),
    ``theta``, ``lam``, ``mode`` (``exact``/``faiss``), ``k``, ``nprobe`` (override the saved
    settings) and ``bpda_theta`` (attack through a lower-temperature copy, e.g. 5; in FAISS
    mode a :class:`ClassTopMCache`, which keeps every class's nearest keys).
    """
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} for defense 'cache'; allowed: "
                         f"{', '.join(_OPTIONS)}")
    if not options.get("path"):
        raise ValueError("defense 'cache' needs options.path: a cache from `advimage cache tune`")
    if not isinstance(model, ImageClassifier):
        raise ValueError(f"defense 'cache' wraps an ImageClassifier, got {type(model).__name__}")
    overrides = {k: v for k, v in options.items()
                 if k not in ("path", "bpda_theta") and v is not None}
    cache = CacheModel.load(Path(str(options["path"])).expanduser(), model, **overrides)
    return CacheDefense(cache, options.get("bpda_theta"))


def parse_defense_arg(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME[:PATH][,key=value...]`` (CLI ``--defense``) -> ``(name, options)``.

    ``cache:runs/c,lam=1,theta=30`` gives ``("cache", {"path": "runs/c", "lam": 1.0,
    "theta": 30.0})``; values that parse as numbers become numbers.
    """
    head, *pairs = [p.strip() for p in text.split(",")]
    name, _, path = head.partition(":")
    if not name:
        raise ValueError(f"--defense needs NAME[:PATH][,key=value...], got {text!r}")
    options: dict[str, Any] = {"path": path} if path else {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise ValueError(f"--defense option {pair!r} is not key=value")
        try:
            options[key] = int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            options[key] = value
    return name, options
