"""Numerical core of the cache model: per-class log-sum-exp of ``theta * similarity``.

Orhan (2018), "A Simple Cache Model for Image Recognition", defines the cache distribution
``p_mem(y|x) ∝ sum_i exp(theta * phi(x)^T phi(x_i)) 1[y_i = y]``. With ``theta`` up to ~100
the exponentials overflow or underflow in float32, so this module works with the per-class
log-sum-exp ``L_y = log sum_{i: y_i=y} exp(theta s_i)`` and shifts every class by its own
running maximum similarity (the shift is a constant for autograd, so gradients are exact).
Keys are processed in chunks (the full ``queries x keys`` similarity matrix is never held)
and several ``theta`` values share one pass over the keys (cheap grid search).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

__all__ = ["ClassLogSumExp", "class_log_sum_exp", "mix_log_probs", "topk_class_log_sum_exp"]


def _chunk_sums(
    sims: Tensor, labels: Tensor, shift: Tensor, thetas: Sequence[float], num_classes: int
) -> Tensor:
    """``sum_{i in chunk, y_i=y} exp(theta (s_i - shift_y))`` for every theta: ``(T, B, K)``.

    ``sims`` (B, C); ``labels`` (C,) shared by all rows or (B, C) per row (top-k lists);
    ``shift`` (B, K) detached per-class maxima (every exponent is <= 0).
    """
    if labels.dim() == 1:
        own_shift = shift[:, labels]  # (B, C)
        onehot = torch.zeros(
            (labels.numel(), num_classes), dtype=sims.dtype, device=sims.device
        )  # (C, K)
        onehot[torch.arange(labels.numel(), device=sims.device), labels] = 1.0
        out = [torch.exp(theta * (sims - own_shift)) @ onehot for theta in thetas]  # (B, K)
    else:
        own_shift = shift.gather(1, labels)  # (B, C); -inf only for padded (-inf) entries
        own_shift = torch.where(torch.isfinite(own_shift), own_shift, torch.zeros_like(sims))
        base = torch.zeros(
            (sims.shape[0], num_classes), dtype=sims.dtype, device=sims.device
        )  # (B, K)
        out = [base.scatter_add(1, labels, torch.exp(theta * (sims - own_shift)))
               for theta in thetas]
    return torch.stack(out)  # (T, B, K)


def _similarities_and_sums(
    q: Tensor, keys: Tensor, labels: Tensor, shift: Tensor, thetas: tuple[float, ...],
    num_classes: int,
) -> Tensor:
    sims = q @ keys.to(q.dtype).T  # (B, C)
    return _chunk_sums(sims, labels, shift, thetas, num_classes)


class ClassLogSumExp:
    """Streaming accumulator of per-class ``log sum exp(theta * s)`` for several thetas.

    Keeps, per query row and class, the running maximum similarity ``M`` (no gradient) and
    the sums ``S_t = sum exp(theta_t (s - M))`` (with gradient); adding a chunk rescales the
    old sums when ``M`` grows. Each present class has a term equal to 1 in ``S``, so ``log S``
    never sees an underflowed zero, whatever ``theta``.

    Args:
        thetas: inverse temperatures (> 0), one output slice each.
        batch: query rows ``B``.
        num_classes: ``K``.
        like: a tensor giving dtype and device of the accumulators.
    """

    def __init__(self, thetas: Sequence[float], batch: int, num_classes: int, like: Tensor):
        self.thetas = tuple(float(t) for t in thetas)
        self.num_classes = num_classes
        shape = (batch, num_classes)
        self.max = torch.full(shape, float("-inf"), dtype=like.dtype, device=like.device)
        self.sums = torch.zeros((len(self.thetas), *shape), dtype=like.dtype, device=like.device)

    def add_similarities(self, sims: Tensor, labels: Tensor) -> None:
        """Add a chunk of similarities ``(B, C)`` with labels ``(C,)`` or ``(B, C)``."""
        old_max = self.max
        new_max = self._merge_max_only(sims, labels)
        scale = self._rescale(old_max, new_max)  # (T, B, K), no grad
        chunk = _chunk_sums(sims, labels, new_max, self.thetas, self.num_classes)
        self.sums = self.sums * scale + chunk
        self.max = new_max

    def add_keys(self, q: Tensor, keys: Tensor, labels: Tensor) -> None:
        """Add a chunk of keys ``(C, D)`` (any float dtype) for unit queries ``q`` ``(B, D)``.

        With gradients enabled the chunk's similarities are recomputed in backward
        (activation checkpointing), so memory stays ``O(B x K)`` per chunk instead of
        keeping every ``B x C`` block alive until backward.
        """
        with torch.no_grad():
            sims = q.detach() @ keys.to(q.dtype).T  # (B, C)
        old_max = self.max
        new_max = self._merge_max_only(sims, labels)
        scale = self._rescale(old_max, new_max)
        if torch.is_grad_enabled() and q.requires_grad:
            chunk = checkpoint(
                _similarities_and_sums, q, keys, labels, new_max, self.thetas,
                self.num_classes, use_reentrant=False,
            )
        else:
            chunk = _chunk_sums(sims, labels, new_max, self.thetas, self.num_classes)
        self.sums = self.sums * scale + chunk
        self.max = new_max

    def _merge_max_only(self, sims: Tensor, labels: Tensor) -> Tensor:
        with torch.no_grad():
            index = labels.expand_as(sims) if labels.dim() == 1 else labels  # (B, C)
            chunk_max = torch.full_like(self.max, float("-inf")).scatter_reduce(
                1, index, sims.detach().to(self.max.dtype), reduce="amax", include_self=True
            )  # (B, K)
            return torch.maximum(self.max, chunk_max)

    def _rescale(self, old_max: Tensor, new_max: Tensor) -> Tensor:
        """``exp(theta (M_old - M_new))`` per theta, 0 where a class had no key yet."""
        with torch.no_grad():
            had = torch.isfinite(old_max)  # (B, K)
            delta = torch.where(had, old_max - new_max, torch.zeros_like(new_max))  # <= 0
            scales = [torch.where(had, torch.exp(t * delta), torch.zeros_like(delta))
                      for t in self.thetas]
            return torch.stack(scales)  # (T, B, K)

    def result(self) -> Tensor:
        """``(T, B, K)`` log-sum-exps; ``-inf`` for classes with no key (gradient-safe)."""
        present = torch.isfinite(self.max)  # (B, K)
        theta = torch.tensor(self.thetas, dtype=self.max.dtype, device=self.max.device)
        safe_max = torch.where(present, self.max, torch.zeros_like(self.max))
        safe_sums = torch.where(present, self.sums, torch.ones_like(self.sums))  # (T, B, K)
        lse = theta.view(-1, 1, 1) * safe_max + torch.log(safe_sums)
        return torch.where(present, lse, torch.full_like(lse, float("-inf")))


def class_log_sum_exp(
    q: Tensor, keys: Tensor, labels: Tensor, thetas: Sequence[float], num_classes: int,
    *, key_chunk: int = 8192,
) -> Tensor:
    """Per-class ``log sum_i exp(theta q^T k_i)`` over all keys, in key chunks: ``(T, B, K)``.

    Args:
        q: ``(B, D)`` unit queries (float32 or float64; gradients flow to it).
        keys: ``(N, D)`` unit keys, any float dtype (float16 in the cache).
        labels: ``(N,)`` int64 class of each key.
        thetas: inverse temperatures.
        num_classes: ``K``.
        key_chunk: keys per block (memory ~ ``B x key_chunk`` floats).
    """
    acc = ClassLogSumExp(thetas, q.shape[0], num_classes, q)
    for start in range(0, keys.shape[0], key_chunk):
        acc.add_keys(q, keys[start:start + key_chunk], labels[start:start + key_chunk])
    return acc.result()


def topk_class_log_sum_exp(
    q: Tensor, keys: Tensor, labels: Tensor, idx: Tensor, thetas: Sequence[float],
    num_classes: int,
) -> Tensor:
    """Per-class log-sum-exp over each query's candidate keys only: ``(T, B, K)``.

    ``idx`` ``(B, k)`` are key indices from a top-k search (``-1`` = no candidate). The
    candidates are re-scored exactly against ``keys`` (gradients flow to ``q``); classes
    without a candidate get ``-inf``.
    """
    valid = idx >= 0  # (B, k)
    safe = idx.clamp_min(0)
    cand = keys[safe].to(q.dtype)  # (B, k, D)
    sims = torch.einsum("bd,bkd->bk", q, cand)  # (B, k)
    sims = torch.where(valid, sims, torch.full_like(sims, float("-inf")))
    acc = ClassLogSumExp(thetas, q.shape[0], num_classes, q)
    acc.add_similarities(sims, labels[safe])
    return acc.result()


def mix_log_probs(log_p_model: Tensor, log_p_mem: Tensor, lam: float) -> Tensor:
    """``log((1 - lam) p_model + lam p_mem)`` computed in log space (exact at lam 0 and 1)."""
    if lam <= 0.0:
        return log_p_model
    if lam >= 1.0:
        return log_p_mem
    return torch.logaddexp(log_p_model + math.log1p(-lam), log_p_mem + math.log(lam))
