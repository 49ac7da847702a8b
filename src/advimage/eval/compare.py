"""``advimage compare``: finished run directories side by side, like a leaderboard.

One row per run x defense (a run's model behind each of its defenses): clean accuracy, robust
accuracy per attack and budget, the worst case over the attacks of each budget, AutoAttack where
the run has it, the run's gradient-masking findings and a ``partial`` flag as flags on the row;
every rate with its Wilson 95% interval over the images. The worst case is computed per image
from the stored per-sample rows: an image counts as robust at a budget only if it survived every
attack at that budget (the minimum of the attacks' rates when those rows are incomplete).

Runs made on different data (dataset, split, limit, image count and shape, label mapping) or
with different budget grids are refused in one line unless ``allow_mismatch``; then the
mismatches are listed in the page and the JSON. Every store is read through
:class:`~advimage.eval.store.ResultStore` (verified on open); paths in the outputs are relative
to the output folder.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advimage.errors import UserInputError
from advimage.eval.checks import run_configured_checks
from advimage.eval.runner import CONFIG_NAME
from advimage.eval.store import DB_NAME, ResultStore
from advimage.formatting import budget_label, display_model, display_path, rate_interval
from advimage.jsonfile import read_json_object
from advimage.utils import atomic_writer, write_json

__all__ = ["RunSummary", "compare_runs", "find_mismatches", "load_run"]

Budget = tuple[str, float]  # (norm, eps)
_DIGEST_KEYS = ("digest", "image_digest", "sha256")


def _budget(norm: str, eps: float) -> Budget:
    return norm, round(float(eps), 9)


@dataclass
class RunSummary:
    """What the comparison needs of one run directory."""

    given: str  # the path as the user wrote it (error messages)
    label: str  # the path relative to the output folder (outputs)
    name: str
    model: str
    data: dict[str, Any]
    budgets: list[Budget]
    progress: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserInputError(f"{path}: missing; not a finished `advimage run` directory")
    return read_json_object(path, "{path}: not valid JSON ({reason})")


def _data_identity(config: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """What makes two runs' images the same: the config's data and the run's description."""
    d, described = config.get("data", {}), meta.get("data") or {}
    ident = {k: d.get(k) for k in ("name", "split", "limit", "image_size")}
    ident.update({"n_images": described.get("n"), "image_shape": described.get("image_shape"),
                  "label_mapping": described.get("label_mapping")})
    ident.update({k: described[k] for k in _DIGEST_KEYS if k in described})
    return ident


def _worst_cases(store: ResultStore, results: list[dict[str, Any]]) -> dict[tuple, dict]:
    """Per (defense, budget): images robust to every bounded attack of that budget, per image.

    Falls back to the minimum of the attacks' rates (method ``min over attacks``) when some
    attack lacks rows for some images (per-image worst case impossible).
    """
    budget_of = {r["attack"]: _budget(r["norm"], r["eps"]) for r in results
                 if r["kind"] != "unbounded"}
    attacks: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        if r["attack"] in budget_of:
            attacks[(r["defense"], budget_of[r["attack"]])].append(r)
    per_image: dict[tuple, dict[int, list[int]]] = defaultdict(dict)
    for s in store.iter_samples():
        b = budget_of.get(s["attack"])
        if b is not None:
            cell = per_image[(s["defense"], b)].setdefault(int(s["sample"]), [1, 0])
            cell[0] = min(cell[0], int(s["robust_correct"]))
            cell[1] += 1
    out = {}
    for key, rows in attacks.items():
        images = per_image.get(key, {})
        complete = bool(images) and all(c == len(rows) for _, c in images.values())
        if complete:
            n, robust = len(images), sum(m for m, _ in images.values())
            rate, method = robust / n, "per image"
        else:
            n = min(int(r["n"]) for r in rows)
            rate, method = min(float(r["robust_accuracy"]) for r in rows), "min over attacks"
        out[key] = {"norm": key[1][0], "eps": key[1][1], "budget": budget_label(key[1][1],
                    key[1][0]), "robust_accuracy": rate, "n": n, "ci": list(rate_interval(rate, n)),
                    "attacks": [r["label"] for r in rows], "method": method}
    return out


def _findings(config: dict[str, Any], store: ResultStore,
              results: list[dict[str, Any]]) -> list[Any]:
    """The run's gradient-masking findings, with the run's own check settings."""
    if not results:
        return []
    return run_configured_checks(config.get("checks", {}), results, store.defenses(),
                                 store.gradients)


def _attack_cell(r: dict[str, Any]) -> dict[str, Any]:
    n, rate = int(r["n"]), float(r["robust_accuracy"])
    return {"attack": r["label"], "name": r["name"], "kind": r["kind"], "norm": r["norm"],
            "eps": float(r["eps"]), "budget": budget_label(r["eps"], r["norm"]),
            "robust_accuracy": rate, "n": n, "ci": list(rate_interval(rate, n))}


def _defense_row(run: RunSummary, defense: str, results: list[dict[str, Any]],
                 worst: dict[tuple, dict], findings: list[Any]) -> dict[str, Any]:
    rows = [r for r in results if r["defense"] == defense]
    n, clean = int(rows[0]["n"]), float(rows[0]["clean_accuracy"])
    bounded = [_attack_cell(r) for r in rows if r["kind"] != "unbounded"]
    mine = [f for f in findings if f.defense == defense]
    texts = [str(f) for f in mine]  # the checks name attacks as pgd@8/255 themselves
    flags = (["partial"] if run.progress["partial"] else []) + sorted({f.check for f in mine})
    return {"run": run.label, "run_name": run.name, "model": run.model, "defense": defense,
            "partial": bool(run.progress["partial"]), "n": n, "clean_accuracy": clean,
            "clean_ci": list(rate_interval(clean, n)), "attacks": bounded,
            "autoattack": [c for c in bounded if c["name"] == "autoattack"],
            "worst_case": [w for (d, _), w in sorted(worst.items(), key=lambda kv: kv[0][1])
                           if d == defense],
            "flags": flags, "findings": texts}


def load_run(run_dir: str | Path, out: str | Path) -> RunSummary:
    """Read one run directory (its store verified on open) into leaderboard rows.

    Raises:
        UserInputError: not a run directory, or its ``config.json``/``run.json`` unreadable.
        CorruptFileError: a damaged result store.
    """
    run = Path(run_dir)
    if not (run / DB_NAME).is_file():
        raise UserInputError(f"{run}: not a run directory (no {DB_NAME}); give folders "
                             "written by `advimage run`")
    config, meta = _read_json(run / CONFIG_NAME), _read_json(run / "run.json")
    with ResultStore(run / DB_NAME) as store:
        results = store.results()
        progress = store.progress()
        worst = _worst_cases(store, results)
        findings = _findings(config, store, results)
        defenses = [d["defense"] for d in store.defenses()]
    summary = RunSummary(
        given=str(run_dir), label=display_path(run.resolve(), out), name=str(config.get("name")),
        model=display_model(str(config.get("model", {}).get("path")), Path(out)),
        data=_data_identity(config, meta),
        budgets=sorted({_budget(r["norm"], r["eps"]) for r in results
                        if r["kind"] != "unbounded"}),
        progress=progress)
    summary.rows = [_defense_row(summary, d, results, worst, findings) for d in defenses
                    if any(r["defense"] == d for r in results)]
    return summary


def _budget_text(budgets: Sequence[Budget]) -> str:
    return "{" + ", ".join(budget_label(e, n) for n, e in budgets) + "}"


def find_mismatches(runs: Sequence[RunSummary], *, given: bool = True) -> list[str]:
    """One line per run whose data or budget grid differs from the first run's; runs named as
    the user gave them (``given``) or relative to the output folder."""
    ref, out = runs[0], []
    name = (lambda r: r.given) if given else (lambda r: r.label)
    for r in runs[1:]:
        keys = [k for k in {**ref.data, **r.data} if ref.data.get(k) != r.data.get(k)]
        if keys:
            out.append(f"data differs between {name(ref)} and {name(r)}: " + ", ".join(
                f"{k} {ref.data.get(k)!r} vs {r.data.get(k)!r}" for k in keys))
        if ref.budgets != r.budgets:
            out.append(f"budgets differ between {name(ref)} {_budget_text(ref.budgets)} and "
                       f"{name(r)} {_budget_text(r.budgets)}")
    return out


def _csv_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Fixed columns, then per budget (in order) its attacks' and worst-case columns, each
    followed by the interval bounds (``_lo``, ``_hi``)."""
    cols: dict[str, Budget] = {}
    for row in rows:
        for c in row["attacks"]:
            cols.setdefault(f"{c['attack']} {c['budget']}", _budget(c["norm"], c["eps"]))
        for w in row["worst_case"]:
            cols.setdefault(f"worst case {w['budget']}", _budget(w["norm"], w["eps"]))
    names = sorted(cols, key=lambda k: (cols[k], k.startswith("worst case")))
    rates = [x for k in ["clean_accuracy", *names] for x in (k, f"{k}_lo", f"{k}_hi")]
    return ["run", "model", "defense", "partial", "n", *rates, "flags"]


def _csv_row(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row[k] for k in ("run", "model", "defense", "partial", "n")}
    cells = [("clean_accuracy", row["clean_accuracy"], row["clean_ci"])]
    cells += [(f"{c['attack']} {c['budget']}", c["robust_accuracy"], c["ci"])
              for c in row["attacks"]]
    cells += [(f"worst case {w['budget']}", w["robust_accuracy"], w["ci"])
              for w in row["worst_case"]]
    for key, rate, (lo, hi) in cells:
        out.update({key: rate, f"{key}_lo": lo, f"{key}_hi": hi})
    return {**out, "flags": ";".join(row["flags"])}


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with atomic_writer(path, newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=_csv_columns(rows))
        w.writeheader()
        w.writerows(_csv_row(r) for r in rows)


def compare_runs(run_dirs: Sequence[str | Path], out: str | Path, *,
                 allow_mismatch: bool = False) -> dict[str, Path]:
    """Write ``compare.html``, ``compare.csv`` and ``compare.json`` of ``run_dirs`` into ``out``.

    Returns:
        The written paths by kind (``html``, ``csv``, ``json``).

    Raises:
        UserInputError: no run, a run given twice, not a run directory, or runs on different
            data or budgets without ``allow_mismatch``.
    """
    from advimage import __version__
    from advimage.eval.compare_html import HOW_TO_READ, render_comparison

    out = Path(out)
    if not run_dirs:
        raise UserInputError("compare needs at least one run directory")
    seen = [Path(r).resolve() for r in run_dirs]
    if len(set(seen)) < len(seen):
        raise UserInputError("a run directory is given twice; give each run once")
    runs = [load_run(r, out) for r in run_dirs]
    mismatches = find_mismatches(runs)
    if mismatches and not allow_mismatch:
        raise UserInputError(f"{mismatches[0]}; compare runs made on the same data and budgets, "
                             "or pass --allow-mismatch to show them side by side anyway")
    rows = [row for r in runs for row in r.rows]
    doc = {"advimage_version": __version__, "how_to_read": HOW_TO_READ,
           "mismatches": find_mismatches(runs, given=False),
           "budgets": [{"norm": n, "eps": e, "label": budget_label(e, n)}
                       for n, e in sorted({b for r in runs for b in r.budgets})],
           "runs": [{"run": r.label, "name": r.name, "model": r.model, "data": r.data,
                     "budgets": [budget_label(e, n) for n, e in r.budgets], **r.progress}
                    for r in runs],
           "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    paths = {"html": out / "compare.html", "csv": out / "compare.csv",
             "json": out / "compare.json"}
    _write_csv(paths["csv"], rows)
    write_json(paths["json"], doc)
    render_comparison(doc).save(paths["html"])
    return paths
