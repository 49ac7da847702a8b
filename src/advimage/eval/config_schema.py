"""The small schema behind run configs: typed keys with defaults and choices, paths.

An unknown key or a wrong type is a one-line ``ValueError`` naming the key and the allowed keys
or values, so a typo never silently falls back to a default (:mod:`advimage.eval.config`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from advimage.attacks.registry import attack_class
from advimage.errors import UserInputError
from advimage.threat import ThreatModel
from advimage.validation import parse_fraction

__all__ = ["EXECUTORS", "ExecutorConfig", "Key", "check_attack_options", "check_budget",
           "eps_values", "parse_executor", "positive_int", "resolve_path", "same_run",
           "section"]

_REQUIRED = object()
EXECUTORS = ("serial", "ray")  # advimage.eval.executor


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
    """``ValueError`` naming ``where`` unless ``value`` is None or >= 1."""
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


def eps_values(where: str, value: object) -> list[float]:
    """A budget or list of budgets (numbers or fractions like ``8/255``), each > 0."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError(f"config: {where!r} needs at least one budget, e.g. [8/255]")
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float, str)):
            raise ValueError(f"config: {where!r} must be numbers or fractions like 8/255, "
                             f"got {item!r}")
        v = parse_fraction(item, where)
        if not (v > 0) or math.isnan(v):
            raise ValueError(f"config: {where!r} must be > 0, got {item!r}")
        out.append(v)
    return out


def check_budget(where: str, norm: str, eps: float) -> None:
    """One line naming the config key when ``eps`` does not fit the norm (linf above 1, a
    fractional l0 pixel count)."""
    try:
        ThreatModel(norm, eps)  # type: ignore[arg-type]
    except UserInputError as err:
        raise UserInputError(f"config: {where!r}: {err}") from None
    except ValueError as err:
        raise ValueError(f"config: {where!r}: {err}") from None


def check_attack_options(where: str, name: str, options: Mapping[str, Any]) -> None:
    """``ValueError`` naming the first option that attack ``name`` does not take."""
    allowed = sorted(f.name for f in fields(attack_class(name))
                     if f.init and f.name not in ("eps", "norm", "seed"))
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"config: unknown key '{where}.options.{unknown[0]}' for attack "
                         f"{name!r}; allowed: {', '.join(allowed)}")


@dataclass(frozen=True)
class ExecutorConfig:
    """The ``executor:`` section: a name, or a mapping with the Ray settings.

    Attributes:
        name: ``serial`` or ``ray``.
        address: a Ray cluster (``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``); None starts a
            local Ray instance on this machine's CPUs and GPUs.
        workers: Ray actors; None: as many as the cluster's CPUs allow (``cpus_per_worker``
            each).
        cpus_per_worker: CPUs (and torch threads) per actor.
        gpus_per_worker: GPUs per actor, fractions allowed (0.5: two actors share a GPU); None:
            the cluster's GPUs shared evenly when the run's device is not ``cpu``.
        max_retries: further attempts of a batch whose worker died or raised.
    """

    name: str = "serial"
    address: str | None = None
    workers: int | None = None
    cpus_per_worker: int = 1
    gpus_per_worker: float | None = None
    max_retries: int = 2

    def to_dict(self) -> dict[str, Any]:
        """The section as a config mapping (:func:`parse_executor` reads it back)."""
        return dict(vars(self))


def parse_executor(raw: object) -> ExecutorConfig:
    """Validate the ``executor:`` config key (``None``, a name, or a mapping)."""
    if raw is None:
        return ExecutorConfig()
    if isinstance(raw, str):
        raw = {"name": raw}
    e = section("executor", raw, {
        "name": Key((str,), "serial", choices=EXECUTORS),
        "address": Key((str,), None, nullable=True),
        "workers": Key((int,), None, nullable=True),
        "cpus_per_worker": Key((int,), 1),
        "gpus_per_worker": Key((int, float), None, nullable=True),
        "max_retries": Key((int,), 2),
    })
    positive_int("executor.workers", e["workers"])
    positive_int("executor.cpus_per_worker", e["cpus_per_worker"])
    if e["max_retries"] < 0:
        raise ValueError(f"config: 'executor.max_retries' must be >= 0, got {e['max_retries']}")
    g = e["gpus_per_worker"]
    if g is not None and not 0 <= g:
        raise ValueError(f"config: 'executor.gpus_per_worker' must be >= 0, got {g}")
    return ExecutorConfig(**{**e, "name": e["name"].lower()})


def same_run(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two resolved configs (:meth:`RunConfig.to_dict`) describe the same results: the
    ``executor`` only says where batches run, so a run may resume on another one."""
    return {k: v for k, v in a.items() if k != "executor"} == \
        {k: v for k, v in b.items() if k != "executor"}
