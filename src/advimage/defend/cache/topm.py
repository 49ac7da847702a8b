"""Class-wise top-m attack copy of the cache model of Orhan (2018), "A Simple Cache Model for
Image Recognition": the BPDA surrogate of the ``cache`` defense in FAISS mode, and the white-box
view of the cache robustness study.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from advimage.defend.base import Defense
from advimage.defend.cache.model import CacheModel
from advimage.defend.cache.ops import mix_log_probs, topk_class_log_sum_exp

__all__ = ["ClassTopMCache"]


class ClassTopMCache(Defense):
    """Attack copy of a cache: exact search, then each class's ``m`` most similar keys.

    A FAISS top-k copy gives classes with no candidate ``log p = -inf``: a confident cache-only
    model then has ``p_y = 1`` exactly and a zero loss gradient (masking by truncation, not
    robustness). Keeping the top ``m`` keys OF EVERY CLASS keeps every class's
    log-sum-exp finite (at theta >= 20 it is within ~``log(n_c / m)`` nats of the exact one)
    while only ``K m`` keys per query enter the backward pass.

    Args:
        cache: the cache (its keys, theta and lambda unless overridden).
        m: keys kept per class and query.
        theta, lam: override the cache's inverse temperature / mixing weight.
        query_chunk: queries per candidate gather (memory ~ ``query_chunk K m D`` floats).
    """

    is_randomized = False
    is_differentiable = True
    uses_bpda = False

    def __init__(self, cache: CacheModel, m: int = 20, theta: float | None = None,
                 lam: float | None = None, query_chunk: int = 25) -> None:
        super().__init__()
        self.cache, self.m, self.query_chunk = cache, m, query_chunk
        self.theta = cache.theta if theta is None else float(theta)
        self.lam = cache.lam if lam is None else float(lam)
        labels = cache.key_labels
        self.class_index = [torch.nonzero(labels == c).flatten()
                            for c in range(cache.num_classes)]  # K x (n_c,)

    @torch.no_grad()
    def _candidates(self, phi: Tensor) -> Tensor:
        sims = torch.cat([phi @ chunk.float().T for chunk in self.cache.keys.split(8192)],
                         dim=1)  # (B, N)
        picks = [idx[sims[:, idx].topk(min(self.m, len(idx)), dim=1).indices]
                 for idx in self.class_index if len(idx)]
        return torch.cat(picks, dim=1)  # (B, K m) key indices

    def forward(self, x: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` in [0, 1] -> log-probabilities ``(B, K)``."""
        logits, phi = self.cache.embed(x)  # (B, K), (B, D)
        blocks = []
        for q in phi.split(self.query_chunk):
            idx = self._candidates(q.detach())
            lse = topk_class_log_sum_exp(q, self.cache.keys, self.cache.key_labels, idx,
                                         [self.theta], self.cache.num_classes)[0]  # (b, K)
            blocks.append(lse - torch.logsumexp(lse, dim=1, keepdim=True))
        return mix_log_probs(F.log_softmax(logits, dim=1), torch.cat(blocks), self.lam)
