"""Small per-attack configs for the contract tests (both attack helpers extend this dict).

Keys are registry names (``advimage.attacks.list_attacks()``); values are ``create_attack``
keyword arguments chosen so each attack runs in well under a second on 64 digits images while
still being strong enough that a trained model's accuracy drops. Budgets are in [0, 1] pixel
units. Attacks missing here run with their defaults.
"""

from __future__ import annotations

from typing import Any

FAST_CONFIG: dict[str, dict[str, Any]] = {
    "fgsm": {"eps": 0.3},
    "pgd": {"eps": 0.3, "steps": 7},
    "cw-l2": {"steps": 30, "binary_steps": 4, "lr": 0.05, "initial_const": 1.0},
    "apgd-ce": {"eps": 0.3, "steps": 10},
    "apgd-dlr": {"eps": 0.3, "steps": 10},
    "apgd-t": {"eps": 0.3, "steps": 10, "n_target_classes": 3},
    "square": {"eps": 0.3, "queries": 150},
    "autoattack": {"eps": 0.3, "version": "fast"},
    "fmn": {"norm": "l2", "steps": 20},
    "ddn": {"steps": 20},
    "deepfool": {"steps": 20},
    "hsj": {"queries": 400, "steps": 4, "init_evals": 30},
    "fab": {"eps": 0.3, "steps": 10},
    "fab-t": {"eps": 0.3, "steps": 10, "n_target_classes": 3},
}


def fast_config(name: str) -> dict[str, Any]:
    """A copy of the fast config of attack ``name`` (empty when not listed)."""
    return dict(FAST_CONFIG.get(name, {}))
