"""Tiny run configs for the harness tests (the bundled digits model, a few images), and the
local Ray instance of the executor tests."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import advimage

SRC = str(Path(advimage.__file__).resolve().parents[1])
"""The ``src`` folder this checkout's advimage is imported from (Ray workers import it too)."""


@contextlib.contextmanager
def local_ray(module_name: str) -> Iterator[Any]:
    """One local Ray instance with 2 CPUs whose workers import advimage from this checkout and
    run one torch thread; the test module ``module_name`` is pickled by value (workers cannot
    import it)."""
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[module_name])
    info = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                    runtime_env={"env_vars": {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}})
    try:
        yield info
    finally:
        ray.shutdown()


def tiny_config(**overrides: Any) -> dict[str, Any]:
    """A CI-sized run config (digits, bundled model) as a plain dict."""
    cfg: dict[str, Any] = {
        "name": "tiny",
        "seed": 0,
        "device": "cpu",
        "model": {"path": "bundled"},
        "data": {"name": "digits", "split": "test", "limit": 20, "batch_size": 10},
        "attacks": [
            {"name": "fgsm", "eps": [0.1, 0.2]},
            {"name": "pgd", "eps": [0.1], "options": {"steps": 3}},
        ],
        "examples": 3,
        "checks": {"unbounded_steps": 5},
    }
    cfg.update(overrides)
    return cfg
