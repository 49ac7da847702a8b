"""Cache memory model: Orhan (2018), "A Simple Cache Model for Image Recognition" (NeurIPS).

A classifier is combined with a key-value memory of its training set: keys are the
L2-normalized, concatenated activations ``phi(x)`` of a few late layers, values the labels.
A query's cache distribution is ``p_mem(y|x) ∝ sum_i exp(theta phi(x)^T phi(x_i)) 1[y_i=y]``
and the output mixes it with the network's softmax, ``p = (1 - lam) p_model + lam p_mem``.
The paper reports better clean accuracy and some robustness to adversarial images, because
late-layer features of perturbed images often still sit near training images of the true
class. ``lam = 1`` is the "cache only" model.

``CacheModel.forward`` returns LOG-probabilities ``log p``: cross-entropy attacks work on
them unchanged (``log_softmax`` of a log-distribution is itself) and they are not mistaken
for softmax outputs. Exact mode is differentiable; FAISS mode (approximate top-k) is not
(declared ``is_differentiable = False``, so evaluations must use BPDA or a surrogate, e.g.
``cache.surrogate(theta=...)``: with a large theta the exponentials saturate and mask
gradients, a lower-theta exact copy gives attackers useful ones).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from advimage.defend.base import Defense
from advimage.defend.cache.features import collect_keys, features_and_logits
from advimage.defend.cache.index import FaissKeyIndex
from advimage.defend.cache.ops import class_log_sum_exp, mix_log_probs, topk_class_log_sum_exp
from advimage.models.classifier import ImageClassifier

__all__ = ["CacheModel", "check_lambda", "check_layers", "check_theta"]

MODES = ("exact", "faiss")
_LOG_FLOOR = -1e4  # log-probability floor for classes absent from a query's top-k (nats)


def check_theta(theta: object) -> float:
    """``theta`` (inverse temperature of the cache, > 0) as a float, else ``ValueError``."""
    try:
        value = float(theta)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"theta must be a positive number, got {theta!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"theta must be a positive finite number, got {theta!r}")
    return value


def check_lambda(lam: object) -> float:
    """Mixing weight ``lam`` of the cache in ``[0, 1]`` as a float, else ``ValueError``."""
    try:
        value = float(lam)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"lambda must be a number in [0, 1], got {lam!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"lambda must lie in [0, 1], got {lam!r}")
    return value


def check_layers(model: ImageClassifier, layers: Sequence[str] | str) -> list[str]:
    """``layers`` as a list of names of ``model.layer_names()``, else ``ValueError``."""
    names = [layers] if isinstance(layers, str) else [str(n) for n in layers]
    if not names:
        raise ValueError("layers must name at least one layer; see model.layer_names()")
    valid = model.layer_names()
    for name in names:
        if name not in valid:
            raise ValueError(f"unknown layer {name!r}; valid layers: {', '.join(valid)}")
    return names


class CacheModel(Defense):
    """A classifier plus a cache of its training set; ``forward`` returns log-probabilities.

    Deterministic; differentiable in exact mode only; no BPDA (see :class:`CacheDefense`).

    Args:
        model: the wrapped :class:`ImageClassifier` (images in [0, 1]).
        layers: names (``model.layer_names()``) whose flattened outputs form the keys.
        keys: ``(N, D)`` unit keys, stored as float16 (2 bytes per dimension per key).
        labels: ``(N,)`` int64 label of each key.
        theta: inverse temperature of the cache (> 0; the paper tunes it, ~10-100).
        lam: weight of the cache in the mixture, in [0, 1] (1 = cache only).
        mode: ``"exact"`` (all keys, chunked, differentiable) or ``"faiss"`` (top-k).
        k: candidates per query in FAISS mode.
        nprobe: IVF cells scanned per query in FAISS mode.
        nlist: IVF cells (default ``sqrt(N)``; exhaustive below 10,000 keys).
        flip: whether the keys include horizontal flips (recorded in saved caches).
        key_chunk: keys per block in exact mode (memory ~ ``query_chunk x key_chunk`` floats).
        query_chunk: queries per block.
    """

    is_randomized: ClassVar[bool] = False
    uses_bpda: ClassVar[bool] = False
    keys: Tensor  # (N, D) float16 buffer
    key_labels: Tensor  # (N,) int64 buffer

    def __init__(
        self, model: ImageClassifier, layers: Sequence[str] | str, keys: Tensor, labels: Tensor,
        *, theta: float = 50.0, lam: float = 0.5, mode: str = "exact", k: int = 100,
        nprobe: int = 16, nlist: int | None = None, flip: bool = False,
        key_chunk: int = 8192, query_chunk: int = 256,
    ) -> None:
        super().__init__()
        if not isinstance(model, ImageClassifier):
            raise ValueError(
                f"CacheModel wraps an ImageClassifier, got {type(model).__name__}; use wrap_model"
            )
        self.model = model
        self.layers = check_layers(model, layers)
        if not isinstance(keys, Tensor) or keys.dim() != 2 or keys.shape[0] < 1:
            raise ValueError("keys must be a non-empty (N, D) tensor")
        labels = torch.as_tensor(labels)
        if labels.shape != (keys.shape[0],) or labels.is_floating_point():
            raise ValueError(
                f"labels must be ({keys.shape[0]},) integers, got {tuple(labels.shape)}"
            )
        if int(labels.min()) < 0 or int(labels.max()) >= model.num_classes:
            raise ValueError(f"labels must lie in [0, {model.num_classes})")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        for name, value in (("k", k), ("key_chunk", key_chunk), ("query_chunk", query_chunk),
                            ("nprobe", nprobe)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.register_buffer("keys", keys.detach().to(torch.float16))  # (N, D)
        self.register_buffer("key_labels", labels.detach().to(torch.int64).to(keys.device))  # (N,)
        self.theta = check_theta(theta)
        self.lam = check_lambda(lam)
        self.mode, self.k, self.nprobe, self.nlist = mode, k, nprobe, nlist
        self.flip = bool(flip)
        self.key_chunk, self.query_chunk = key_chunk, query_chunk
        self._index: FaissKeyIndex | None = None
        if mode == "faiss":
            self.index  # noqa: B018 -- build now so errors (no FAISS) surface at construction

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls, model: ImageClassifier, layers: Sequence[str] | str,
        data: Iterable[tuple[Tensor, Tensor]], *, flip: bool = False, batch_size: int = 256,
        **options: Any,
    ) -> CacheModel:
        """Embed a training set (an ``ImageDataset`` or ``(x, y)`` batches) into a cache.

        ``flip=True`` also stores each image's horizontal mirror (as in the paper).
        ``options`` go to the constructor (``theta``, ``lam``, ``mode``, ``k``, ...).
        """
        layers = check_layers(model, layers)
        batches = data.batches(batch_size) if hasattr(data, "batches") else data
        keys, labels = collect_keys(model, layers, batches, flip=flip)
        return cls(model, layers, keys, labels, flip=flip, **options)

    def replace(self, **changes: Any) -> CacheModel:
        """A copy with some options changed; shares the model, keys and (if valid) the index."""
        opts: dict[str, Any] = dict(theta=self.theta, lam=self.lam, mode=self.mode, k=self.k,
                    nprobe=self.nprobe, nlist=self.nlist, flip=self.flip,
                    key_chunk=self.key_chunk, query_chunk=self.query_chunk)
        opts.update(changes)
        mode = opts["mode"]
        opts["mode"] = "exact"  # attach the shared index before building a new one
        new = CacheModel(self.model, self.layers, self.keys, self.key_labels, **opts)
        new.mode = mode
        if mode != "exact":
            if self._index is not None and (new.nlist, new.nprobe) == (self.nlist, self.nprobe):
                new._index = self._index
            new.index  # noqa: B018
        return new

    def surrogate(self, theta: float | None = None) -> CacheModel:
        """A differentiable exact-mode copy with inverse temperature ``theta`` for attackers.

        Large theta makes ``p_mem`` nearly one-hot and its gradients vanish (gradient
        masking); attacking a lower-theta copy (e.g. 1-10) and transferring the result is
        the adaptive attack this option exists for.
        """
        return self.replace(mode="exact", theta=self.theta if theta is None else theta)

    def approximate(self, k: int | None = None, nprobe: int | None = None) -> CacheModel:
        """A FAISS-mode copy (top-``k`` keys per query) sharing the keys."""
        return self.replace(mode="faiss", k=k or self.k, nprobe=nprobe or self.nprobe)

    # ------------------------------------------------------------------ properties
    @property
    def is_differentiable(self) -> bool:
        """True in exact mode; FAISS's discrete neighbour search has no useful gradient."""
        return self.mode == "exact"

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def index(self) -> FaissKeyIndex:
        """The FAISS index over the keys, built on first use."""
        if self._index is None:
            self._index = FaissKeyIndex(self.keys, nlist=self.nlist, nprobe=self.nprobe)
        return self._index

    def extra_repr(self) -> str:
        return (f"layers={self.layers}, keys={tuple(self.keys.shape)}, theta={self.theta:g}, "
                f"lam={self.lam:g}, mode={self.mode!r}" + (f", k={self.k}" if
                                                          self.mode == "faiss" else ""))

    # ------------------------------------------------------------------ computation
    def embed(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(logits (B, K), phi (B, D) unit keys)`` of images ``x`` in one forward pass."""
        return features_and_logits(self.model, x, self.layers)

    def memory_log_probs(self, phi: Tensor, thetas: Sequence[float] | None = None) -> Tensor:
        """``log p_mem`` of unit queries ``phi`` ``(B, D)``: ``(B, K)`` (or ``(T, B, K)``).

        ``thetas`` evaluates several inverse temperatures in one pass over the keys.
        """
        ths = [self.theta] if thetas is None else [check_theta(t) for t in thetas]
        if phi.dim() != 2 or phi.shape[1] != self.keys.shape[1]:
            raise ValueError(f"queries must be (B, {self.keys.shape[1]}), got {tuple(phi.shape)}")
        blocks = []
        for start in range(0, phi.shape[0], self.query_chunk):
            q = phi[start:start + self.query_chunk]  # (b, D)
            if self.mode == "exact":
                lse = class_log_sum_exp(q, self.keys, self.key_labels, ths, self.num_classes,
                                        key_chunk=self.key_chunk)
            else:
                idx = self.index.search(q.detach(), self.k)  # (b, k)
                lse = topk_class_log_sum_exp(q, self.keys, self.key_labels, idx, ths,
                                             self.num_classes)
            blocks.append(lse - torch.logsumexp(lse, dim=-1, keepdim=True))  # (T, b, K)
        out = torch.cat(blocks, dim=1)
        return out[0] if thetas is None else out

    def forward(self, x: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` in [0, 1] -> log-probabilities ``(B, K)`` (not logits)."""
        if self.lam == 0.0:
            return F.log_softmax(self.model(x), dim=1)
        logits, phi = self.embed(x)
        out = mix_log_probs(F.log_softmax(logits, dim=1), self.memory_log_probs(phi), self.lam)
        return out.clamp_min(_LOG_FLOOR) if self.mode != "exact" else out

    @torch.no_grad()
    def approximation_error(self, x: Tensor, exact: CacheModel | None = None) -> dict[str, float]:
        """Compare FAISS mode with exact mode on images ``x``.

        Returns ``agreement`` (fraction of equal predicted classes) and ``max_abs_prob_diff``
        (largest absolute difference of any output probability).
        """
        approx = self if self.mode != "exact" else self.approximate()
        exact = exact or self.replace(mode="exact")
        a, b = approx(x), exact(x)  # (B, K) log-probabilities
        return {
            "agreement": float((a.argmax(1) == b.argmax(1)).float().mean()),
            "max_abs_prob_diff": float((a.exp() - b.exp()).abs().max()),
            "n": int(x.shape[0]),
            "k": approx.k,
            "nprobe": approx.nprobe,
        }
