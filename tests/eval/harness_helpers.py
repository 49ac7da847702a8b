"""Tiny run configs for the harness tests (the bundled digits model, a few images)."""

from __future__ import annotations

from typing import Any


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
