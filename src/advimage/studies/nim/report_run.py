"""Inputs of the De^3 robustness report (You et al., NeurIPS 2023, "Beyond Pretrained Features:
Noisy Image Modeling Provides Adversarial Defense"): a harness run read and checked.

A folder written by ``advimage run`` (results.json, config.json, examples/) becomes a
:class:`Run` of :class:`Defense` and :class:`Attack` records. Each ``nim`` defense is described
by its resolved options (sigma_test, noise_seed: "noise known to the attacker", the autoencoder
path) and the autoencoder's sidecar ``<stem>.json`` (``config.mode``: NIM or the MIM baseline);
labels are never parsed. :func:`check_baseline` makes sure a baseline run attacked the same
images with the same attacks. Every problem is a one-line ``ValueError`` naming the file or flag, so
the report can check all its inputs before it writes anything (:mod:`advimage.studies.nim.report`).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advimage.defend.nim.defense import De3Defense
from advimage.eval.plots import eps_label
from advimage.validation import parse_fraction

__all__ = ["DASH", "WORST", "Attack", "Defense", "Run", "check_baseline", "diff", "load_run",
           "parse_pairs", "pct", "pick_attack", "read_json", "series"]

EPS_TOL = 1e-6  # eps values closer than this are the same budget
DASH = "–"  # a table cell that was not run
WORST = "worst-case"  # Attack.kind of a per-image worst case over several attacks
ATTACK_FIELDS = ("name", "eps", "steps", "eot", "restarts", "norm")  # same in a baseline
DATA_FIELDS = ("name", "split", "limit", "offset", "image_size")  # config "data": same images


@dataclass(frozen=True)
class Defense:
    """One defense of the run, from the resolved config (and the autoencoder's sidecar)."""

    label: str
    mode: str | None = None  # "nim" / "mim" for the De^3 defense, None otherwise
    sigma: float | None = None  # sigma_test, 0-255 scale
    seed: int | None = None  # noise_seed: the attacker knows the draw
    path: Path | None = None  # autoencoder checkpoint stem
    classifier: str | None = None


@dataclass(frozen=True)
class Attack:
    """One attack column of the run (a results row's attack fields)."""

    key: str  # results' "attack" (label@eps), the examples' key
    label: str
    name: str
    eps: float  # budget, [0, 1] pixel scale
    steps: int
    eot: int  # EOT samples per gradient
    restarts: int
    kind: str
    norm: str
    parts: tuple[str, ...] = ()  # kind WORST: the keys of the attacks it takes the worst of

    @property
    def title(self) -> str:
        """Column title: ``pgd 8/255``, ``label (check)`` for an unbounded sanity attack,
        ``worst case 8/255`` for a worst case."""
        if self.kind == "unbounded":
            return f"{self.label} (check)"
        return f"{self.label} {eps_label(self.eps)}"


@dataclass
class Run:
    """A harness run: its result rows, findings, resolved config, defenses and attacks."""

    path: Path
    rows: list[dict[str, Any]]
    findings: list[dict[str, Any]]
    config: dict[str, Any]
    defenses: list[Defense]
    attacks: list[Attack]
    worst: list[Attack] = field(default_factory=list)  # worst-case columns (their rows in rows)

    def row(self, defense: str, key: str) -> dict[str, Any] | None:
        """The result row of ``defense`` under attack ``key``, or None when not run."""
        return next((r for r in self.rows if r["defense"] == defense and r["attack"] == key), None)

    def clean(self, defense: str) -> float | None:
        """Clean accuracy of ``defense`` (fraction), or None when it has no rows."""
        return next((r["clean_accuracy"] for r in self.rows if r["defense"] == defense), None)

    def robust(self, defense: str, key: str | None) -> float | None:
        """Robust accuracy of ``defense`` under attack ``key`` (fraction), or None."""
        r = self.row(defense, key) if key else None
        return None if r is None else r["robust_accuracy"]


def read_json(path: Path) -> Any:
    """The parsed JSON file; ValueError (one line) when it is missing or broken."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"missing {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def pct(v: float | None) -> str:
    """A fraction as a percentage cell (``37.5``), DASH for None."""
    return DASH if v is None else f"{100 * v:.1f}"


def diff(a: float | None, b: float | None) -> str:
    """``a - b`` in signed percentage points (``+5.0``), DASH when either is None."""
    return DASH if a is None or b is None else f"{100 * (a - b):+.1f}"


def _stem(path: Path) -> Path:
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path


def _checkpoint(text: str, run_dir: Path) -> Path:
    """The autoencoder stem: as given (cwd, as the defense resolves it), else below RUN_DIR's
    ancestors (a run built from the repository root and reported from elsewhere)."""
    p = _stem(Path(text).expanduser())
    cands = [p] if p.is_absolute() else [p, *(a / p for a in run_dir.resolve().parents)]
    for c in cands:
        if c.with_name(c.name + ".json").exists() and c.with_name(c.name + ".safetensors").exists():
            return c
    raise ValueError(f"NIM checkpoint {text!r} of the run config not found "
                     f"(need {p.name}.safetensors and {p.name}.json)")


def _default_sigma() -> float:
    return float(inspect.signature(De3Defense).parameters["sigma_test"].default)


def load_run(run_dir: Path, checkpoints: bool = True) -> Run:
    """Read a harness run folder.

    Args:
        run_dir: folder with results.json and config.json (``advimage run --out``).
        checkpoints: False for a baseline run (only its ``none`` rows are used): its
            autoencoder checkpoints are not resolved and its De^3 defenses carry no mode.

    Raises:
        ValueError: one line, on missing or broken inputs (no result rows, a ``nim`` defense
            without a checkpoint path, a checkpoint that is not found).
    """
    res = read_json(run_dir / "results.json")
    cfg = read_json(run_dir / "config.json")
    rows = [r for r in res.get("results", []) if r.get("clean_accuracy") is not None]
    if not rows:
        raise ValueError(f"{run_dir / 'results.json'} holds no result rows")
    labels = list(dict.fromkeys(r["defense"] for r in rows))
    opts = {d["label"]: d for d in cfg.get("defenses", [])}
    defenses = []
    for label in labels:
        d = opts.get(label, {"name": label, "options": {}})
        o = d.get("options") or {}
        if d.get("name") != "nim" or not checkpoints:
            defenses.append(Defense(label))
            continue
        if not o.get("path"):
            raise ValueError(f"defense {label!r} of {run_dir} has no checkpoint path "
                             "in config.json")
        stem = _checkpoint(str(o["path"]), run_dir)
        mode = read_json(stem.with_name(stem.name + ".json")).get("config", {}).get("mode", "nim")
        sigma = o.get("sigma_test", _default_sigma())
        defenses.append(Defense(label, mode, float(sigma), o.get("noise_seed"), stem,
                                o.get("classifier")))
    attacks: dict[str, Attack] = {}
    for r in rows:
        attacks.setdefault(r["attack"], Attack(
            r["attack"], r["label"], r["name"], float(r["eps"]), int(r["steps"]), int(r["eot"]),
            int(r.get("restarts", 1)), r.get("kind", ""), r.get("norm", "")))
    return Run(run_dir, rows, res.get("findings", []), cfg, defenses, list(attacks.values()))


def pick_attack(run: Run, spec: str | None) -> tuple[Attack, Attack | None]:
    """The trade-off's attack and the EOT variant of it, if the run has one.

    Args:
        run: the harness run.
        spec: ``LABEL@EPS`` (e.g. ``pgd@8/255``); None picks the strongest (most steps, then
            restarts) EOT-free PGD at 8/255, else at the largest budget.

    Returns:
        ``(attack, eot)``: ``eot`` has the same attack name and eps and the most EOT samples.

    Raises:
        ValueError: ``spec``'s eps does not parse, or the run has no such attack.
    """
    if spec:
        label, _, eps_text = spec.rpartition("@")
        eps = parse_fraction(eps_text, "--attack eps")
        hits = [a for a in run.attacks if a.label == label and abs(a.eps - eps) < EPS_TOL]
        if not hits:
            have = ", ".join(f"{a.label}@{eps_label(a.eps)}" for a in run.attacks)
            raise ValueError(f"--attack {spec} is not in the run (have {have})")
        chosen = hits[0]
    else:
        pgd = [a for a in run.attacks if a.name == "pgd" and a.eot == 1 and a.kind != "unbounded"]
        at8 = [a for a in pgd if abs(a.eps - 8 / 255) < EPS_TOL]
        pool = at8 or sorted(pgd, key=lambda a: -a.eps)[:1] or \
            [a for a in run.attacks if a.kind != "unbounded"] or run.attacks
        chosen = max(pool, key=lambda a: (a.steps, a.restarts))
    eot = [a for a in run.attacks if a.name == chosen.name and abs(a.eps - chosen.eps) < EPS_TOL
           and a.eot > chosen.eot]
    return chosen, max(eot, key=lambda a: (a.eot, a.steps)) if eot else None


def series(run: Run) -> dict[str, dict[float, Defense]]:
    """De^3 defenses grouped as "NIM", "NIM, noise known", "MIM"...: {group: {sigma: defense}}.

    Groups and sigmas are sorted; a known-noise group without its own sigma 0 gets the
    noise-free defense of its mode there (no noise at sigma 0: nothing to know).

    Raises:
        ValueError: two defenses share a (mode, noise known, sigma_test) point.
    """
    groups: dict[tuple[bool, bool], dict[float, Defense]] = {}
    for d in sorted(run.defenses, key=lambda d: d.sigma or 0.0):
        if d.mode is None or d.sigma is None:
            continue
        pts = groups.setdefault((d.mode != "nim", d.seed is not None), {})
        if d.sigma in pts:  # e.g. two classifiers or two noise seeds at one sigma_test
            noise = "unknown" if d.seed is None else "known"
            raise ValueError(f"defenses {pts[d.sigma].label!r} and {d.label!r} are both "
                             f"{d.mode.upper()}, noise {noise}, sigma_test {d.sigma:g}: the "
                             "trade-off has one point per sigma (put the other in a run of its "
                             "own)")
        pts[d.sigma] = d
    for (mim, known), pts in groups.items():
        zero = groups.get((mim, False), {}).get(0.0)
        if known and 0.0 not in pts and zero is not None:
            pts[0.0] = zero
    return {("MIM" if mim else "NIM") + (", noise known" if known else ""): dict(sorted(v.items()))
            for (mim, known), v in sorted(groups.items())}


def check_baseline(run: Run, base: Run, name: str, need: Sequence[Attack]) -> None:
    """Check that baseline ``base`` attacked the images ``run`` did, with the same attacks.

    Args:
        run: the report's run.
        base: a baseline run (only its ``none`` rows are compared).
        name: the baseline's ``--baseline`` name.
        need: attacks the baseline must have run (the trade-off's).

    Raises:
        ValueError: naming the first difference: a data field (DATA_FIELDS), a field
            (ATTACK_FIELDS) of an attack key both runs have, or an attack of ``need`` missing.
    """
    flag = f"--baseline {name}={base.path}"
    mine, theirs = run.config.get("data") or {}, base.config.get("data") or {}
    for f in DATA_FIELDS:
        if mine.get(f) != theirs.get(f):
            raise ValueError(f"{flag}: data {f} is {theirs.get(f)!r}, the run's is "
                             f"{mine.get(f)!r} (not the same images)")
    ours = {a.key: a for a in run.attacks}
    for b in base.attacks:
        a = ours.get(b.key)
        for f in ATTACK_FIELDS if a is not None else ():
            x, y = getattr(a, f), getattr(b, f)
            if abs(x - y) >= EPS_TOL if f == "eps" else x != y:
                raise ValueError(f"{flag}: attack {b.key} has {f} {y!r}, the run's has {x!r}")
    for a in need:
        if base.row("none", a.key) is None:
            raise ValueError(f"{flag}: no 'none' row under {a.key} (the trade-off's attack)")


def parse_pairs(items: Sequence[str] | None, flag: str) -> dict[str, Path]:
    """``["NAME=DIR", ...]`` (a repeated command-line ``flag``) as ``{NAME: Path(DIR)}``.

    Raises:
        ValueError: an item without a name, an ``=`` or a folder.
    """
    out: dict[str, Path] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"{flag} expects NAME=DIR, got {item!r}")
        out[name] = Path(path)
    return out
