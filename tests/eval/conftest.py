"""Fixtures of the evaluation-harness tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml


@pytest.fixture
def write_config(tmp_path: Path):  # noqa: ANN201
    def _write(cfg: dict[str, Any], name: str = "cfg.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        return path

    return _write


@pytest.fixture(autouse=True)
def _one_thread():  # noqa: ANN202
    """Single-threaded torch: oversubscribed CPUs make the tiny models much slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
