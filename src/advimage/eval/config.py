"""Declarative evaluation configs (``advimage run configs/NAME.yaml``) and their schema.

A run config names the model, the data, the attack grid (each attack with its threat model:
norm and a list of budgets, and a transfer attack's surrogates; :mod:`.config_attacks`),
defenses and detectors (by registry name, see :mod:`advimage.defend.registry` and
:mod:`advimage.detect.registry`), the report's metrics and the gradient-masking checks.
Every section is validated by a small schema: an unknown key or a wrong type is a one-line
``ValueError`` naming the key and the allowed keys or values, so a typo never silently falls
back to a default. Relative paths resolve against the config file's folder, then the cwd.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from advimage.data.registry import list_datasets
from advimage.defend.registry import list_defenses
from advimage.detect.registry import list_detectors
from advimage.eval.config_attacks import ATTACK_KINDS, AttackConfig, parse_attacks
from advimage.eval.config_schema import (
    ExecutorConfig,
    Key,
    parse_executor,
    positive_int,
    resolve_path,
    same_run,
    section,
)
from advimage.precision import PRECISIONS

__all__ = ["METRICS", "ATTACK_KINDS", "AttackConfig", "ChecksConfig", "ComponentConfig",
           "DataConfig", "ExecutorConfig", "RunConfig", "load_config", "parse_config",
           "resolve_path", "same_run"]

METRICS = ("clean_accuracy", "robust_accuracy", "mean_distance", "seconds")

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
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)  # where batches run

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
            "attacks": [a.to_dict() for a in self.attacks],
            "defenses": [vars(d).copy() for d in self.defenses],
            "detectors": [vars(d).copy() for d in self.detectors],
            "checks": vars(self.checks).copy(),
            "metrics": list(self.metrics),
            # only when set: fp32 run folders keep the config.json they were started with
            **({"precision": self.precision} if self.precision != "fp32" else {}),
            **({"executor": self.executor.to_dict()}
               if self.executor != ExecutorConfig() else {}),
        }


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


def _parse_model(model: object, base: Path | None) -> str:
    m = section("model", {"path": model} if isinstance(model, str) else model,
                {"path": Key((str,))})
    return resolve_path(m["path"], base, "model checkpoint (model.path)")


def _parse_data(raw: object, base: Path | None) -> DataConfig:
    d = section("data", raw, {
        "name": Key((str,), "digits", choices=list_datasets),
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
    return DataConfig(**d)


def _parse_checks(raw: object) -> ChecksConfig:
    c = section("checks", raw, {
        k: Key((type(v),) if not isinstance(v, float) else (int, float), v)
        for k, v in vars(ChecksConfig()).items()
    })
    positive_int("checks.unbounded_steps", c["unbounded_steps"])
    return ChecksConfig(**c)


def _parse_metrics(raw: list[object]) -> list[str]:
    metrics = [str(x) for x in raw]
    for x in metrics:
        if x not in METRICS:
            raise ValueError(f"config: 'metrics' must hold values from {', '.join(METRICS)}, "
                             f"got {x!r}")
    return metrics


_TOP = {
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
    "precision": Key((str,), "fp32", choices=PRECISIONS),
    "executor": Key((str, dict), None, nullable=True),
}


def parse_config(raw: object, base: Path | None = None) -> RunConfig:
    """Validate a config mapping (as loaded from YAML) and resolve its paths against ``base``."""
    top = section("", raw, _TOP)
    if top["examples"] < 0:
        raise ValueError(f"config: 'examples' must be >= 0, got {top['examples']}")
    model = _parse_model(top["model"], base)  # the order of the checks: the old single pass
    data = _parse_data(top["data"], base)
    attacks = parse_attacks(top["attacks"], base)
    checks = _parse_checks(top["checks"])
    metrics = _parse_metrics(top["metrics"])
    defenses = _components("defenses", top["defenses"], list_defenses) or [
        ComponentConfig("none", "none", {})
    ]
    return RunConfig(
        name=top["name"], model=model, data=data, attacks=attacks, defenses=defenses,
        detectors=_components("detectors", top["detectors"], list_detectors),
        checks=checks, metrics=metrics, seed=top["seed"], device=top["device"],
        examples=top["examples"], description=top["description"],
        precision=top["precision"].lower(), executor=parse_executor(top["executor"]),
    )


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
