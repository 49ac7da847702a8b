"""The defense registry that run configs and ``--defense`` plug into by name.

A *defense builder* is ``builder(model, options) -> Defense``: the returned
:class:`~advimage.defend.base.Defense` is the defended classifier the attacks see (images in
[0, 1] -> logits) and declares the flags the gradient-masking checks read (Athalye, Carlini &
Wagner, 2018, "Obfuscated Gradients Give a False Sense of Security").

A new defense is one file with ``@register_defense("name")`` on its builder, which starts with
``o = defense_options("name", options, {defaults})``, plus one import line in
``advimage/defend/__init__.py``; the contract tests (``tests/defend/test_defense_contract.py``) then
cover it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from advimage.defend.base import Defense
from advimage.registry import Registry

__all__ = ["DEFENSES", "DefenseBuilder", "build_defense", "defense_options", "list_defenses",
           "parse_defense_arg", "register_defense"]

DefenseBuilder = Callable[[nn.Module, Mapping[str, Any]], Defense]
DEFENSES: Registry[DefenseBuilder] = Registry("defense")


def register_defense(name: str) -> Callable[[DefenseBuilder], DefenseBuilder]:
    """Decorator: register a defense builder ``(model, options) -> Defense`` under ``name``."""
    return DEFENSES.register(name)  # type: ignore[return-value]


def list_defenses() -> list[str]:
    """The registered defense names, sorted."""
    return DEFENSES.names()


def defense_options(name: str, options: Mapping[str, Any],
                    defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``options``; ``ValueError`` names an option not in ``defaults``.

    Every registered builder validates its options through this one function.
    """
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} for defense {name!r}; "
                         f"allowed: {', '.join(defaults)}")
    return {**defaults, **options}


def build_defense(name: str, model: nn.Module, options: Mapping[str, Any]) -> Defense:
    """The defended model for defense ``name`` (``ValueError`` for unknown names/options)."""
    out = DEFENSES.get(name)(model, dict(options))
    if not isinstance(out, Defense):
        raise ValueError(f"defense {name!r} must build a Defense, got {type(out).__name__}")
    return out


def parse_defense_arg(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME[:PATH][,key=value...]`` (CLI ``--defense``) -> ``(name, options)``.

    ``cache:runs/c,lam=1,theta=30`` gives ``("cache", {"path": "runs/c", "lam": 1.0,
    "theta": 30.0})``; values that parse as numbers become numbers.
    """
    head, *pairs = [p.strip() for p in text.split(",")]
    name, _, path = head.partition(":")
    if not name:
        raise ValueError(f"--defense needs NAME[:PATH][,key=value...], got {text!r}")
    options: dict[str, Any] = {"path": path} if path else {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise ValueError(f"--defense option {pair!r} is not key=value")
        try:
            options[key] = int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            options[key] = value
    return name, options
