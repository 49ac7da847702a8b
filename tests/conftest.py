"""Shared fixtures: the third-party data and models beside the checkout (``../shared``).

Tests that need them skip with a reason when they are absent. ``ADVIMAGE_SHARED`` overrides
the location; no test uses an absolute path.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

# the cache tests' fixtures (tests/defend and tests/studies/cache share them)
pytest_plugins = ["cache_fixtures"]

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


@pytest.fixture(scope="session", autouse=True)
def _torch_threads() -> Iterator[None]:
    """One torch thread for the suite (``ADVIMAGE_TEST_THREADS`` overrides).

    The tests' models are tiny; with several threads on the 2 cores CI shares with other
    processes they ran 10-100x slower (OpenMP threads waiting on each other).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("ADVIMAGE_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def report_script() -> Callable[[str], ModuleType]:
    """``load(name)``: ``reports/<name>/make_report.py`` as a fresh module (the report scripts
    are files run from the command line, not a package)."""

    def load(name: str) -> ModuleType:
        path = REPO_ROOT / "reports" / name / "make_report.py"
        spec = importlib.util.spec_from_file_location(f"{name}_make_report", path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        return module

    return load
