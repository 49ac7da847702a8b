"""Default IVF cells of the cache's FAISS index: unchanged below 500,000 keys."""

from __future__ import annotations

import math

import pytest

from advimage.defend.cache.index import default_nlist


@pytest.mark.parametrize("n", [10_000, 12_345, 50_000, 100_000, 499_999])
def test_cells_below_half_a_million_keys_are_sqrt_n(n):
    assert default_nlist(n) == round(math.sqrt(n))  # every stored cache keeps its index


@pytest.mark.parametrize("n", [1, 9_999])
def test_small_caches_scan_exhaustively(n):
    assert default_nlist(n) == 1


@pytest.mark.parametrize(("n", "cells"), [(500_000, 2828), (1_000_000, 4000), (4_000_000, 8000)])
def test_large_caches_get_four_times_the_cells(n, cells):
    assert default_nlist(n) == cells  # a quarter of the keys scanned at the same nprobe


def test_index_uses_the_default():
    faiss = pytest.importorskip("faiss")
    torch = pytest.importorskip("torch")
    from advimage.defend.cache.index import FaissKeyIndex

    gen = torch.Generator().manual_seed(0)
    keys = torch.nn.functional.normalize(torch.randn(10_240, 16, generator=gen), dim=1)
    index = FaissKeyIndex(keys, nprobe=4)
    assert index.nlist == 101 and isinstance(faiss.extract_index_ivf(index.index), faiss.IndexIVF)
