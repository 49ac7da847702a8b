"""Approximate top-k inner-product search over cache keys with FAISS (Johnson et al., 2019).

The exact cache compares a query with every key; at a million keys that dominates the cost.
``FaissKeyIndex`` finds each query's ``k`` most similar keys with an inverted-file index
(IVF: k-means cells, ``nprobe`` of them scanned per query) over 8-bit scalar-quantized codes
(1 byte per dimension). Small caches use an exhaustive scan of the same codes. The cache then
re-scores the returned candidates exactly against its float16 keys, so quantization only
affects *which* keys are found, never their similarity values.

Cells: ``sqrt(N)`` by default, and ``4 sqrt(N)`` from 500,000 keys up, so that a query at the
cache's ``nprobe`` scans a quarter of the keys: at 1M keys (dim 256, 256 queries, one thread)
``IVF1000,SQ8`` at nprobe 16 was 8.1x the exact lookup and ``IVF4000,SQ8`` 19.9x, both at 100%
label agreement, for a 7x longer build (``bench/cache_index_table.py``, recorded in
``bench/README.md``). Below 500,000 keys (every stored cache) the index is what it was.

FAISS is an optional dependency (``pip install faiss-cpu``); it runs on the CPU.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["FaissKeyIndex", "default_nlist", "import_faiss"]

log = logging.getLogger(__name__)

_MIN_KEYS_FOR_IVF = 10_000  # below this an exhaustive scan of the codes is fast enough
_MIN_KEYS_FOR_FINE_CELLS = 500_000  # from here on 4 sqrt(N) cells (see the module docstring)
_TRAIN_PER_CELL = 40  # k-means training points per IVF cell (FAISS warns below 39)
_KMEANS_ITERS = 10  # k-means iterations for the IVF cells
_ADD_BLOCK = 65_536  # keys converted to float32 at a time while adding


def import_faiss() -> Any:
    """Import FAISS or raise a one-line ``ImportError`` saying how to install it."""
    try:
        import faiss
    except ImportError:
        raise ImportError(
            "approximate cache search needs FAISS: pip install faiss-cpu"
        ) from None
    return faiss


def default_nlist(n: int) -> int:
    """IVF cells for ``n`` keys: 1 below 10,000, ``sqrt(n)``, ``4 sqrt(n)`` from 500,000."""
    if n < _MIN_KEYS_FOR_IVF:
        return 1
    scale = 4.0 if n >= _MIN_KEYS_FOR_FINE_CELLS else 1.0
    return max(1, min(n, round(scale * math.sqrt(n))))


class FaissKeyIndex:
    """Top-k inner-product search over ``(N, D)`` keys (IVF + 8-bit scalar quantizer).

    Args:
        keys: ``(N, D)`` unit keys (any float dtype, any device; copied to the CPU in blocks).
        nlist: IVF cells; default ``round(sqrt(N))`` (``round(4 sqrt(N))`` from 500,000 keys),
            and 1 (exhaustive) below 10,000 keys.
        nprobe: cells scanned per query (recall vs. speed; ignored when exhaustive).
        seed: seed of the training sample and of k-means.
    """

    def __init__(self, keys: Tensor, *, nlist: int | None = None, nprobe: int = 16,
                 seed: int = 0) -> None:
        faiss = import_faiss()
        if keys.dim() != 2 or keys.shape[0] < 1:
            raise ValueError(f"keys must be a non-empty (N, D) tensor, got {tuple(keys.shape)}")
        if nprobe < 1:
            raise ValueError(f"nprobe must be >= 1, got {nprobe}")
        n, dim = keys.shape
        if nlist is None:
            nlist = default_nlist(n)
        if nlist < 1 or nlist > n:
            raise ValueError(f"nlist must lie in [1, {n}] (number of keys), got {nlist}")
        self.dim, self.nlist, self.nprobe = int(dim), int(nlist), int(nprobe)
        metric = faiss.METRIC_INNER_PRODUCT
        qtype = faiss.ScalarQuantizer.QT_8bit
        if self.nlist == 1:
            self.index = faiss.IndexScalarQuantizer(self.dim, qtype, metric)
        else:
            self._quantizer = faiss.IndexFlatIP(self.dim)  # kept alive: the IVF refers to it
            self.index = faiss.IndexIVFScalarQuantizer(
                self._quantizer, self.dim, self.nlist, qtype, metric
            )
            self.index.cp.niter = _KMEANS_ITERS
            self.index.cp.seed = int(seed)
            self.index.nprobe = self.nprobe
        rng = np.random.default_rng(seed)
        n_train = min(n, max(_TRAIN_PER_CELL * self.nlist, 10_000))
        sample = np.sort(rng.choice(n, size=n_train, replace=False))
        self.index.train(self._block(keys[torch.from_numpy(sample).to(keys.device)]))
        for start in range(0, n, _ADD_BLOCK):
            self.index.add(self._block(keys[start:start + _ADD_BLOCK]))
        log.info("FAISS index: %d keys, dim %d, %d cells", n, self.dim, self.nlist)

    @staticmethod
    def _block(x: Tensor) -> np.ndarray:
        return np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, q: Tensor, k: int) -> Tensor:
        """Indices ``(B, k)`` (int64, on ``q``'s device) of the keys most similar to ``q``.

        Rows with fewer than ``k`` candidates in the scanned cells are padded with ``-1``.
        """
        k = min(int(k), len(self))
        _, idx = self.index.search(self._block(q), k)
        return torch.from_numpy(idx).to(q.device)

    def nbytes(self) -> int:
        """Approximate memory of the index: codes, list ids (8 bytes each) and centroids."""
        per_key = int(self.index.code_size) + (8 if self.nlist > 1 else 0)
        return len(self) * per_key + self.nlist * self.dim * 4
