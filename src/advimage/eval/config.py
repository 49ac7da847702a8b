"""Declarative evaluation configs (``advimage run configs/NAME.yaml``) and their schema.

A run config names the model, the data, the attack grid (each attack with its threat model:
norm and a list of budgets), defenses and detectors (by registry name, see
:mod:`advimage.defend.registry` and :mod:`advimage.detect.registry`), the report's metrics and
the gradient-masking checks. Every section is validated by a small schema: an unknown key or
a wrong type is a one-line ``ValueError`` naming the key and the allowed keys or values, so a
typo never silently falls back to a default. Relative paths resolve against the config file's
folder, then the cwd.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from advimage.defend.registry import list_defenses
from advimage.detect.registry import list_detectors
from advimage.eval.config_schema import Key, positive_int, resolve_path, section
from advimage.validation import parse_fraction

__all__ = [
    "METRICS",
    "ATTACK_KINDS",
    "AttackConfig",
    "ChecksConfig",
    "ComponentConfig",
    "DataConfig",
    "RunConfig",
    "load_config",
    "parse_config",
    "resolve_path",
]

METRICS = ("clean_accuracy", "robust_accuracy", "mean_distance", "seconds")
ATTACK_KINDS = ("white-box", "black-box", "transfer")
NORMS = ("linf", "l2")
_BLACK_BOX = {"square"}  # registered attacks that use no gradients

# ----------------------------------------------------------------------------- sections
@dataclass
class DataConfig:
    """Which images: a registered dataset, its split and root, a class-balanced limit."""

    name: str = "digits"
    split: str = "test"
    root: str | None = None
    limit: int | None = None  # images, class-balanced (ImageDataset.balanced)
    batch_size: int = 256  # images per batch (one SQLite transaction each)
    image_size: int | None = None  # pixels (square); None keeps the native size


@dataclass
class AttackConfig:
    """One attack at one budget (configs list several budgets; they expand to one each)."""

    name: str
    eps: float
    norm: str = "linf"
    options: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    kind: str = "white-box"
    surrogate: str | None = None  # craft on this model, evaluate on the defended one

    @property
    def key(self) -> str:
        """Unique row name, e.g. ``pgd@0.03137``."""
        return f"{self.label}@{self.eps:.6g}"


@dataclass
class ComponentConfig:
    """A defense or detector built from its registry by ``name`` with ``options``."""

    name: str
    label: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChecksConfig:
    """Gradient-masking checks (Carlini et al., 2019, "On Evaluating Adversarial Robustness")."""

    enabled: bool = True
    unbounded: bool = True  # run PGD with eps = whole pixel box: accuracy must reach ~0
    unbounded_steps: int = 50  # PGD iterations of the unbounded attack
    max_unbounded_accuracy: float = 0.02  # fraction; above it the check fires
    tolerance: float = 0.01  # fraction; rises of robust accuracy below it are noise
    zero_gradients: bool = True  # measure the input gradient on every batch


@dataclass
class RunConfig:
    """A fully validated and resolved run description."""

    name: str
    model: str
    data: DataConfig
    attacks: list[AttackConfig]
    defenses: list[ComponentConfig]
    detectors: list[ComponentConfig]
    checks: ChecksConfig
    metrics: list[str]
    seed: int = 0
    device: str = "auto"
    examples: int = 8  # images per (defense, attack) kept for the report's grids
    description: str = ""
    precision: str = "fp32"  # the model's autocast: fp32|bf16|fp16 (advimage.precision)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config, re-loadable by :func:`parse_config`."""
        return {
            "name": self.name,
            "description": self.description,
            "seed": self.seed,
            "device": self.device,
            "examples": self.examples,
            "model": {"path": self.model},
            "data": vars(self.data).copy(),
            "attacks": [
                {"name": a.name, "eps": a.eps, "norm": a.norm, "options": dict(a.options),
                 "label": a.label, "kind": a.kind, "surrogate": a.surrogate}
                for a in self.attacks
            ],
            "defenses": [vars(d).copy() for d in self.defenses],
            "detectors": [vars(d).copy() for d in self.detectors],
            "checks": vars(self.checks).copy(),
            "metrics": list(self.metrics),
            # only when set: fp32 run folders keep the config.json they were started with
            **({"precision": self.precision} if self.precision != "fp32" else {}),
        }


def _attack_names() -> list[str]:
    from advimage.attacks import list_attacks

    return list_attacks()


def _eps_values(where: str, value: object) -> list[float]:
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


def _components(where: str, items: object, registry_names: Callable[[], Sequence[str]]
                ) -> list[ComponentConfig]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise ValueError(f"config: {where!r} must be a list of {{name: ..., options: ...}}")
    out, labels = [], set()
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = {"name": item}
        d = section(f"{where}[{i}]", item, {
            "name": Key((str,), choices=registry_names),
            "label": Key((str,), None, nullable=True),
            "options": Key((dict,), dict),
        })
        label = d["label"] or d["name"].lower()
        if label in labels:
            raise ValueError(f"config: duplicate label {label!r} in {where}; set 'label'")
        labels.add(label)
        out.append(ComponentConfig(d["name"].lower(), label, d["options"]))
    return out


def parse_config(raw: object, base: Path | None = None) -> RunConfig:
    """Validate a config mapping (as loaded from YAML) and resolve its paths against ``base``."""
    top = section("", raw, {
        "name": Key((str,)),
        "description": Key((str,), ""),
        "seed": Key((int,), 0),
        "device": Key((str,), "auto"),
        "examples": Key((int,), 8),
        "model": Key((dict, str)),
        "data": Key((dict,), dict),
        "attacks": Key((list,)),
        "defenses": Key((list,), None, nullable=True),
        "detectors": Key((list,), None, nullable=True),
        "checks": Key((dict,), dict),
        "metrics": Key((list,), lambda: list(METRICS)),
        "precision": Key((str,), "fp32", choices=_precisions),
    })
    if top["examples"] < 0:
        raise ValueError(f"config: 'examples' must be >= 0, got {top['examples']}")
    model = top["model"]
    m = section("model", {"path": model} if isinstance(model, str) else model,
                 {"path": Key((str,))})
    model_path = resolve_path(m["path"], base, "model checkpoint (model.path)")

    d = section("data", top["data"], {
        "name": Key((str,), "digits", choices=_dataset_names),
        "split": Key((str,), "test", choices=("train", "test", "all")),  # all: folder
        "root": Key((str,), None, nullable=True),
        "limit": Key((int,), None, nullable=True),
        "batch_size": Key((int,), 256),
        "image_size": Key((int,), None, nullable=True),
    })
    for k in ("limit", "batch_size", "image_size"):
        positive_int(f"data.{k}", d[k])
    if d["root"] is not None:
        d["root"] = resolve_path(d["root"], base, "data root (data.root)")
    data = DataConfig(**d)

    attacks: list[AttackConfig] = []
    if not top["attacks"]:
        raise ValueError("config: 'attacks' needs at least one attack, e.g. [{name: pgd, "
                         "eps: [8/255]}]")
    for i, item in enumerate(top["attacks"]):
        where = f"attacks[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        a = section(where, item, {
            "name": Key((str,), choices=_attack_names),
            "eps": Key((int, float, str, list), 8 / 255),
            "norm": Key((str,), "linf", choices=NORMS),
            "options": Key((dict,), dict),
            "label": Key((str,), None, nullable=True),
            "kind": Key((str,), None, nullable=True, choices=ATTACK_KINDS),
            "surrogate": Key((str,), None, nullable=True),
        })
        name = a["name"].lower()
        _check_attack_options(where, name, a["options"])
        surrogate = a["surrogate"]
        if surrogate is not None:
            surrogate = resolve_path(surrogate, base, f"surrogate model ({where}.surrogate)")
        kind = a["kind"] or ("transfer" if surrogate else
                             "black-box" if name in _BLACK_BOX else "white-box")
        label = a["label"] or (f"{name}-transfer" if surrogate else name)
        for eps in _eps_values(f"{where}.eps", a["eps"]):
            _check_budget(f"{where}.eps", a["norm"], eps)
            attacks.append(AttackConfig(name, eps, a["norm"], dict(a["options"]), label, kind,
                                        surrogate))
    keys = [a.key for a in attacks]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError(f"config: attack {dup[0]!r} appears twice; give one a 'label'")

    c = section("checks", top["checks"], {
        k: Key((type(v),) if not isinstance(v, float) else (int, float), v)
        for k, v in vars(ChecksConfig()).items()
    })
    positive_int("checks.unbounded_steps", c["unbounded_steps"])
    metrics = [str(x) for x in top["metrics"]]
    for x in metrics:
        if x not in METRICS:
            raise ValueError(f"config: 'metrics' must hold values from {', '.join(METRICS)}, "
                             f"got {x!r}")
    defenses = _components("defenses", top["defenses"], list_defenses) or [
        ComponentConfig("none", "none", {})
    ]
    return RunConfig(
        name=top["name"], model=model_path, data=data, attacks=attacks, defenses=defenses,
        detectors=_components("detectors", top["detectors"], list_detectors),
        checks=ChecksConfig(**c), metrics=metrics, seed=top["seed"], device=top["device"],
        examples=top["examples"], description=top["description"],
        precision=top["precision"].lower(),
    )


def _precisions() -> tuple[str, ...]:
    from advimage.precision import PRECISIONS

    return PRECISIONS


def _dataset_names() -> list[str]:
    from advimage.data import list_datasets

    return list_datasets()


def _check_budget(where: str, norm: str, eps: float) -> None:
    """One line naming the config key when ``eps`` does not fit the norm (linf above 1)."""
    from advimage.errors import UserInputError
    from advimage.threat import ThreatModel

    try:
        ThreatModel(norm, eps)  # type: ignore[arg-type]
    except UserInputError as err:
        raise UserInputError(f"config: {where!r}: {err}") from None


def _check_attack_options(where: str, name: str, options: Mapping[str, Any]) -> None:
    from dataclasses import fields

    from advimage.attacks import attack_class

    allowed = sorted(f.name for f in fields(attack_class(name))
                     if f.init and f.name not in ("eps", "norm", "seed"))
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"config: unknown key '{where}.options.{unknown[0]}' for attack "
                         f"{name!r}; allowed: {', '.join(allowed)}")


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML run config; relative paths resolve from its folder."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"config {p}: not valid YAML ({first})") from None
    return parse_config(raw, base=p.resolve().parent)
