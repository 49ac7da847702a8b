"""Shared attack-test fixtures: a small CNN trained on scikit-learn's 8x8 digits.

Trained once per session in a couple of seconds on CPU (about 97% test accuracy), so attack
tests can check that accuracy of a *trained* model really drops.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import torch
from sklearn.datasets import load_digits
from torch import Tensor, nn


@dataclass
class TrainedDigits:
    """A trained digits CNN and held-out data: ``x`` (N, 1, 8, 8) in [0, 1], ``y`` (N,)."""

    model: nn.Module
    x: Tensor
    y: Tensor
    clean_accuracy: float


def make_digits_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 4, 4)
        nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, 10),
    )


def train_digits_cnn() -> TrainedDigits:
    """Train :func:`make_digits_cnn` on 1,400 digits; hold out the other 397."""
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8)
    y = torch.tensor(data.target, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=gen)
    train, test = perm[:1400], perm[1400:]
    torch.manual_seed(0)
    model = make_digits_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(15):  # epochs
        for idx in train[torch.randperm(len(train), generator=gen)].split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    assert acc > 0.9, f"digits CNN trained badly: {acc:.3f}"
    return TrainedDigits(model, x[test].contiguous(), y[test].contiguous(), acc)


@pytest.fixture(scope="session")
def trained_digits() -> TrainedDigits:
    """Trained on CPU, then moved to ``ADVIMAGE_TEST_DEVICE`` (default ``cpu``; ``cuda`` runs
    every attack test that uses this fixture on the GPU)."""
    device = torch.device(os.environ.get("ADVIMAGE_TEST_DEVICE", "cpu"))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("ADVIMAGE_TEST_DEVICE=cuda but CUDA is not available")
        # bitwise reproducibility on CUDA needs deterministic kernels (e.g. max-pool backward
        # adds with atomics); CW's Adam steps amplified the differences on an H200
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    with single_thread():
        t = train_digits_cnn()
    return TrainedDigits(t.model.to(device), t.x.to(device), t.y.to(device), t.clean_accuracy)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread: these tiny models are 10-100x slower with several threads
    fighting over the cores the test runs share."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    # module scope: active before any module-scoped fixture of the test file runs
    with single_thread():
        yield
