"""Model tests run torch single-threaded: on a shared, oversubscribed CPU the intra-op thread
pool spin-waits, and a ResNet-56 forward of two images went from 0.02 s (1 thread) to 3 s
(2 threads). The previous setting is restored after each test."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
