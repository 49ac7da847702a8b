"""The small schema behind run configs: typed keys with defaults and choices, paths.

An unknown key or a wrong type is a one-line ``ValueError`` naming the key and the allowed keys
or values, so a typo never silently falls back to a default (:mod:`advimage.eval.config`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Key", "positive_int", "resolve_path", "section"]

_REQUIRED = object()


@dataclass(frozen=True)
class Key:
    """Schema of one config key: accepted types, default, and allowed values."""

    types: tuple[type, ...]
    default: Any = _REQUIRED
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None
    nullable: bool = False


def _type_names(types: tuple[type, ...]) -> str:
    names = {bool: "bool", int: "int", float: "number", str: "string", dict: "mapping",
             list: "list"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def section(where: str, data: object, schema: Mapping[str, Key]) -> dict[str, Any]:
    """Validate mapping ``data`` against ``schema``; returns it with defaults filled in."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ValueError(f"config: {where} must be a mapping with keys "
                         f"{', '.join(schema)}, got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in schema)
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ValueError(f"config: unknown key {key!r}; allowed: {', '.join(schema)}")
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        name = f"{where}.{key}" if where else key
        if key not in data:
            if spec.default is _REQUIRED:
                raise ValueError(f"config: missing required key {name!r}")
            out[key] = spec.default() if callable(spec.default) else spec.default
            continue
        value = data[key]
        if value is None and spec.nullable:
            out[key] = None
            continue
        ok = isinstance(value, spec.types) and not (
            isinstance(value, bool) and bool not in spec.types
        )
        if not ok:
            raise ValueError(f"config: {name!r} must be {_type_names(spec.types)}, got "
                             f"{type(value).__name__} {value!r}")
        if spec.choices is not None:
            choices = spec.choices() if callable(spec.choices) else spec.choices
            if str(value).lower() not in choices:
                raise ValueError(f"config: {name!r} must be one of {', '.join(choices)}, "
                                 f"got {value!r}")
        out[key] = value
    return out


def positive_int(where: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"config: {where!r} must be >= 1, got {value}")


def resolve_path(text: str, base: Path | None, what: str) -> str:
    """Resolve a relative path against ``base`` (the config's folder), then the cwd.

    ``bundled`` / ``bundled:NAME`` and ``hf:ORG/NAME`` model names pass through; the path of
    ``torchscript:PATH`` is resolved. A path found nowhere raises a ``ValueError`` naming every
    place tried.
    """
    if text == "bundled" or text.startswith(("bundled:", "hf:")):
        return text
    if text.startswith("torchscript:"):
        return "torchscript:" + resolve_path(text.removeprefix("torchscript:"), base, what)
    p = Path(text).expanduser()
    tried = [p] if p.is_absolute() else ([base / p] if base else []) + [Path.cwd() / p]
    for cand in tried:
        if cand.exists():
            return str(cand.resolve())
    raise ValueError(f"{what} not found: {' or '.join(str(t) for t in tried)}")
