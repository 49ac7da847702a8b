"""Attack registry: ``create_attack("pgd", eps=8/255, norm="l2")`` by name (CLI, configs).

Attack classes register themselves with ``@register_attack("name")``; duplicate names raise,
unknown names raise ``ValueError`` listing the valid ones (see :class:`advimage.registry.Registry`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

from advimage.attacks.base import Attack
from advimage.registry import Registry

__all__ = ["ATTACKS", "attack_class", "create_attack", "list_attacks", "register_attack"]

A = TypeVar("A", bound=type[Attack])

ATTACKS: Registry[type[Attack]] = Registry("attack")


def register_attack(name: str) -> Callable[[A], A]:
    """Class decorator: register an :class:`Attack` subclass under ``name`` (sets ``cls.name``)."""

    def _add(cls: A) -> A:
        if not (isinstance(cls, type) and issubclass(cls, Attack)):
            raise ValueError(f"register_attack({name!r}) needs an Attack subclass, got {cls!r}")
        ATTACKS.register(name, cls)
        cls.name = name.lower()
        return cls

    return _add


def attack_class(name: str) -> type[Attack]:
    """The class registered under ``name``."""
    return ATTACKS.get(name)


def create_attack(name: str, **config: Any) -> Attack:
    """Build the attack ``name`` with ``config`` (its dataclass fields).

    Raises:
        ValueError: unknown attack, unknown config key, or an invalid value.
    """
    cls = ATTACKS.get(name)
    allowed = sorted(f.name for f in dataclasses.fields(cls) if f.init)
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for attack {name!r}; "
            f"valid: {', '.join(allowed)}"
        )
    return cls(**config)


def list_attacks() -> list[str]:
    """Sorted names of all registered attacks."""
    return ATTACKS.names()
