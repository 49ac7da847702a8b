"""The ``attacks:`` section of run configs (:mod:`advimage.eval.config`): one
:class:`AttackConfig` per attack and budget, with its threat model and, for a transfer attack,
the surrogate model or the list of surrogates whose logit ensemble it is crafted on
(:class:`advimage.attacks.transfer.SurrogateEnsemble`; Dong et al., 2018, Section 3.2).

Every key is checked by :mod:`advimage.eval.config_schema`: an unknown key, a wrong type, an
empty surrogate list, a surrogate file that does not exist or bad weights are one-line
``ValueError`` naming the key.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advimage.attacks.registry import attack_class, list_attacks
from advimage.eval.config_schema import (
    Key,
    check_attack_options,
    check_budget,
    eps_values,
    resolve_path,
    section,
)
from advimage.threat import NORMS as THREAT_NORMS

__all__ = ["ATTACK_KINDS", "NORMS", "AttackConfig", "check_attack_norm", "model_short_name",
           "parse_attacks", "parse_surrogates"]

ATTACK_KINDS = ("white-box", "black-box", "transfer")
NORMS = THREAT_NORMS  # linf, l2, l1, l0; each attack takes the subset in its ``norms``
_BLACK_BOX = {"square"}  # registered attacks that use no gradients


@dataclass
class AttackConfig:
    """One attack at one budget (configs list several budgets; they expand to one each)."""

    name: str
    eps: float
    norm: str = "linf"
    options: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    kind: str = "white-box"
    # craft on this model (several: on their logit ensemble), evaluate on the defended one
    surrogates: tuple[str, ...] = ()
    surrogate_weights: tuple[float, ...] | None = None  # None: equal weights

    @property
    def key(self) -> str:
        """Unique row name, e.g. ``pgd@0.03137``."""
        return f"{self.label}@{self.eps:.6g}"

    @property
    def surrogate_key(self) -> str | None:
        """Names the attack's surrogate (ensemble) in a run: its path for one model, else the
        paths and weights; None for an attack crafted on the defended model itself."""
        if len(self.surrogates) <= 1 and self.surrogate_weights is None:
            return self.surrogates[0] if self.surrogates else None
        return repr((self.surrogates, self.surrogate_weights))

    def to_dict(self) -> dict[str, Any]:
        """The attack as a config entry (one budget); a single surrogate stays a path."""
        many = len(self.surrogates) > 1
        return {"name": self.name, "eps": self.eps, "norm": self.norm,
                "options": dict(self.options), "label": self.label, "kind": self.kind,
                "surrogate": list(self.surrogates) if many else self.surrogate_key,
                **({"surrogate_weights": list(self.surrogate_weights)}
                   if self.surrogate_weights is not None else {})}


def parse_surrogates(where: str, paths: object, weights: object, base: Path | None
                     ) -> tuple[tuple[str, ...], tuple[float, ...] | None]:
    """An attack's ``surrogate`` (a model path, or a list of them: a logit ensemble, see
    :class:`advimage.attacks.transfer.SurrogateEnsemble`), resolved, and its optional
    ``surrogate_weights`` (one number >= 0 per listed surrogate, not all 0; None: equal)."""
    if paths is None:
        if weights is not None:
            raise ValueError(f"config: '{where}.surrogate_weights' needs a 'surrogate' list")
        return (), None
    items = [paths] if isinstance(paths, str) else paths
    if not isinstance(items, list) or not items:
        raise ValueError(f"config: '{where}.surrogate' must be a model path or a non-empty "
                         f"list of model paths, got {paths!r}")
    out: list[str] = []
    for i, p in enumerate(items):
        key = f"{where}.surrogate" + (f"[{i}]" if isinstance(paths, list) else "")
        if not isinstance(p, str):
            raise ValueError(f"config: '{key}' must be a model path, got {p!r}")
        out.append(resolve_path(p, base, f"surrogate model ({key})"))
        if out[-1] in out[:-1]:
            raise ValueError(f"config: '{key}' lists {p!r} twice; use surrogate_weights")
    if weights is None:
        return tuple(out), None
    w = weights if isinstance(weights, list) else []
    ok = (len(out) > 1 and len(w) == len(out)
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < math.inf
                  for v in w) and sum(w) > 0)
    if not ok:
        raise ValueError(f"config: '{where}.surrogate_weights' must be {len(out)} numbers >= 0 "
                         f"(one per surrogate of a list of 2 or more), not all 0; got {weights!r}")
    return tuple(out), tuple(float(v) for v in w)


def model_short_name(spec: str) -> str:
    """A model's readable name in labels: the file's stem without a trailing hash
    (``.../resnet20-12fca82f.th`` -> ``resnet20``), or the name after ``bundled:``/``hf:``."""
    text = spec.split(":", 1)[1] if spec.startswith(("bundled:", "hf:", "torchscript:")) \
        else spec
    name = Path(text).name if spec.startswith("hf:") else Path(text).stem
    return re.sub(r"-[0-9a-f]{6,}$", "", name) or name


def _parse_attack(where: str, item: object, base: Path | None) -> list[AttackConfig]:
    """One ``attacks[i]`` entry, expanded to one :class:`AttackConfig` per budget."""
    if isinstance(item, str):
        item = {"name": item}
    a = section(where, item, {
        "name": Key((str,), choices=list_attacks),
        "eps": Key((int, float, str, list), 8 / 255),
        "norm": Key((str,), "linf", choices=NORMS),
        "options": Key((dict,), dict),
        "label": Key((str,), None, nullable=True),
        "kind": Key((str,), None, nullable=True, choices=ATTACK_KINDS),
        "surrogate": Key((str, list), None, nullable=True),  # a path or a list (ensemble)
        "surrogate_weights": Key((list,), None, nullable=True),
    })
    name = a["name"].lower()
    check_attack_norm(where, name, a["norm"])
    check_attack_options(where, name, a["options"])
    paths, weights = parse_surrogates(where, a["surrogate"], a["surrogate_weights"], base)
    kind = a["kind"] or ("transfer" if paths else
                         "black-box" if name in _BLACK_BOX else "white-box")
    label = a["label"] or (name if not paths else f"{name}-transfer" if len(paths) == 1 else
                           f"{name}-transfer({'+'.join(map(model_short_name, paths))})")
    out = []
    for eps in eps_values(f"{where}.eps", a["eps"]):
        check_budget(f"{where}.eps", a["norm"], eps)
        out.append(AttackConfig(name, eps, a["norm"], dict(a["options"]), label, kind, paths,
                                weights))
    return out


def check_attack_norm(where: str, name: str, norm: str) -> None:
    """One line naming ``where.norm`` when attack ``name`` has no ``norm`` (e.g. PGD in L1),
    with the attacks that have it."""
    norms = attack_class(name).norms
    if norm not in norms:
        have = [n for n in list_attacks() if norm in attack_class(n).norms]
        raise ValueError(f"config: '{where}.norm': attack {name!r} has no {norm} (it has: "
                         f"{', '.join(norms)}); attacks with {norm}: {', '.join(have)}")


def parse_attacks(items: list[object], base: Path | None) -> list[AttackConfig]:
    """The ``attacks`` list, one :class:`AttackConfig` per attack and budget; keys unique."""
    if not items:
        raise ValueError("config: 'attacks' needs at least one attack, e.g. [{name: pgd, "
                         "eps: [8/255]}]")
    attacks = [a for i, item in enumerate(items) for a in _parse_attack(f"attacks[{i}]", item,
                                                                          base)]
    keys = [a.key for a in attacks]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError(f"config: attack {dup[0]!r} appears twice; give one a 'label'")
    return attacks

