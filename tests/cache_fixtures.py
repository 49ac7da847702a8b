"""Fixtures shared by the cache defense's tests and the cache studies' tests (Orhan, 2018):
the bundled digits model with a small class-balanced key set, and a cache saved from it.
Registered for every test by ``pytest_plugins`` in ``tests/conftest.py``; a module that
defines its own ``digits`` fixture overrides this one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from advimage.data import load_dataset
from advimage.defend.cache import CacheModel, save_cache
from advimage.models.hub import load_model


@pytest.fixture(scope="module")
def digits() -> tuple[Any, Any, Any, Any]:
    """``(model, 200 training images, 40 test images, their labels)``."""
    model, _ = load_model("bundled")
    train = load_dataset("digits", "train").balanced(200)
    x, y = load_dataset("digits", "test").balanced(40).tensors()
    return model, train, x, y


@pytest.fixture
def saved_cache(digits: tuple[Any, Any, Any, Any], tmp_path: Path) -> tuple[CacheModel, Path]:
    """A cache of the digits model's ``relu3`` keys, saved to ``tmp_path / "c"``."""
    model, train, _, _ = digits
    cache = CacheModel.build(model, ["relu3"], train, theta=20.0, lam=0.5)
    save_cache(cache, tmp_path / "c", meta={"theta_cache_only": 10.0})
    return cache, tmp_path / "c"
