"""The ``cache`` defense of the run harness: the cache model of Orhan (2018), "A Simple Cache
Model for Image Recognition" (``defenses: [{name: cache, options: {path: ...}}]`` and
``advimage eval robust --defense cache:PATH``), with an optional BPDA backward pass through a
lower-temperature copy: with a large theta, ``exp(theta cos)`` saturates and plain gradients
understate the attacker (Athalye, Carlini & Wagner, 2018).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from advimage.attacks.bpda import BPDA
from advimage.defend.base import Defense
from advimage.defend.cache.io import load_cache
from advimage.defend.cache.model import CacheModel, check_theta
from advimage.defend.cache.topm import ClassTopMCache
from advimage.defend.registry import defense_options, register_defense
from advimage.models.classifier import ImageClassifier

__all__ = ["CacheDefense", "build_cache_defense"]

_OPTIONS = {"path": None, "theta": None, "lam": None, "mode": None, "k": None, "nprobe": None,
            "bpda_theta": None}


class CacheDefense(Defense):
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

    @property
    def uses_bpda(self) -> bool:
        """True when gradients come from the lower-temperature copy (``bpda_theta`` set)."""
        return self.bpda_theta is not None

    @property
    def is_differentiable(self) -> bool:
        """Exact mode without BPDA; FAISS's neighbour search and BPDA replace gradients."""
        return self.cache.is_differentiable and not self.uses_bpda

    def forward(self, x: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` in [0, 1] -> log-probabilities ``(B, K)``."""
        return self.forward_fn(x)  # (B, K) log-probabilities


@register_defense("cache")
def build_cache_defense(model: nn.Module, options: Mapping[str, Any]) -> Defense:
    """The ``cache`` defense: a saved cache (``advimage cache tune``) around ``model``.

    Options: ``path`` (required; the cache written by ``advimage cache build|tune``),
    ``theta``, ``lam``, ``mode`` (``exact``/``faiss``), ``k``, ``nprobe`` (override the saved
    settings) and ``bpda_theta`` (attack through a lower-temperature copy, e.g. 5; in FAISS
    mode a :class:`ClassTopMCache`, which keeps every class's nearest keys).
    """
    defense_options("cache", options, _OPTIONS)
    if not options.get("path"):
        raise ValueError("defense 'cache' needs options.path: a cache from `advimage cache tune`")
    if not isinstance(model, ImageClassifier):
        raise ValueError(f"defense 'cache' wraps an ImageClassifier, got {type(model).__name__}")
    overrides = {k: v for k, v in options.items()
                 if k not in ("path", "bpda_theta") and v is not None}
    cache = load_cache(Path(str(options["path"])).expanduser(), model, **overrides)
    return CacheDefense(cache, options.get("bpda_theta"))
