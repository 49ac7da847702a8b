"""Shared fixtures: the third-party data and models beside the checkout (``../shared``).

Tests that need them skip with a reason when they are absent. ``ADVIMAGE_SHARED`` overrides
the location; no test uses an absolute path.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    return Path(os.environ.get("ADVIMAGE_SHARED", REPO_ROOT.parent / "shared"))


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (set ADVIMAGE_SHARED to the shared/ folder)")
    return path


@pytest.fixture(scope="session")
def cifar10_root() -> Path:
    return _need(shared_root() / "data" / "cifar10", "CIFAR-10 (shared/data/cifar10)")


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    return _need(
        shared_root() / "data" / "mnist" / "raw", "MNIST IDX files (shared/data/mnist/raw)"
    )


@pytest.fixture(scope="session")
def shared_models() -> Path:
    return _need(shared_root() / "models", "reference models (shared/models)")


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    torch.manual_seed(0)
