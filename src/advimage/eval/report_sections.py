"""Sections of the run report (:mod:`advimage.eval.report_run`): the accuracy table, ROC curves
of the detectors, the example grids, defenses and timings, and the run's description; each
table sortable (:data:`~advimage.eval.compare_html.SORT_SCRIPT`), every rate with its Wilson
95% interval and every budget as ``k/255`` (:mod:`advimage.formatting`)."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from advimage.eval.compare_html import Cell, sortable_table
from advimage.eval.report import HtmlReport, attack_grid_figure
from advimage.eval.run_batch import EXAMPLES_DIR
from advimage.eval.store import ResultStore
from advimage.formatting import budget_label, display_value, format_rate

__all__ = ["budget_text", "defense_rows", "grid_sections", "meta_rows", "results_table",
           "roc_groups", "timing_rows"]

_RATES = {"clean_accuracy": "clean", "robust_accuracy": "robust"}


def budget_text(r: Mapping[str, Any]) -> str:
    """``8/255`` (L-inf), ``L2 0.5`` style budget of a result row; ``unbounded`` for checks."""
    if r["kind"] == "unbounded":
        return "unbounded"
    return budget_label(r["eps"], r["norm"])


def _num(v: Any) -> Cell:
    if v is None:
        return "", None
    return (f"{v:.4g}" if isinstance(v, float) else str(v)), float(v)


def results_table(results: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> str:
    """The sortable accuracy table: rates as ``35.0% [18.1, 56.7]`` (Wilson 95%, n images)."""
    header = ["defense", "attack", "budget", "kind", "steps", "n",
              *(_RATES.get(m, m.replace("_", " ")) for m in metrics)]
    rows = []
    for r in results:
        cells: list[Cell] = [(r["defense"], None), (r["label"], None), (budget_text(r), r["eps"]),
                             (r["kind"], None), _num(r["steps"]), _num(r["n"])]
        for m in metrics:
            v = r.get(m)
            cells.append((format_rate(v, int(r["n"])), v) if m in _RATES and v is not None
                         else _num(v))
        rows.append(cells)
    return sortable_table(header, rows)


def roc_groups(store: ResultStore) -> dict[tuple[str, str], dict[str, tuple[list, list]]]:
    """Per (defense, detector), per attack: scores of every clean image and of the adversarial
    images that fooled the model."""
    rows = store.conn.execute(
        "SELECT d.defense, d.detector, d.attack, d.clean_score, d.adv_score, "
        "s.clean_correct AND NOT s.robust_correct AS fooled FROM detector_scores d JOIN samples s "
        "ON s.sample = d.sample AND s.defense = d.defense AND s.attack = d.attack "
        "ORDER BY d.defense, d.detector, d.attack, d.sample").fetchall()
    groups: dict[tuple[str, str], dict[str, tuple[list, list]]] = defaultdict(dict)
    for defense, detector, attack, clean, adv, fooled in rows:
        c, a = groups[(defense, detector)].setdefault(attack, ([], []))
        c.append(clean)
        if fooled:
            a.append(adv)
    return groups


def grid_sections(report: HtmlReport, run: Path, results: Sequence[Mapping[str, Any]],
                  classes: Sequence[str] | None) -> int:
    """One grid per defense (columns: images; rows: clean, then per attack label its largest
    budget's adversarial image and perturbation); returns the number of grids drawn."""
    strongest: dict[str, dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for r in results:
        if r["kind"] != "unbounded":
            cur = strongest[r["defense"]].get(r["label"])
            if cur is None or r["eps"] > cur["eps"]:
                strongest[r["defense"]][r["label"]] = r
    drawn = 0
    for defense, by_label in strongest.items():
        path = run / EXAMPLES_DIR / f"{defense}.safetensors"
        if not path.exists():
            continue
        t = load_file(str(path))
        attacks = {f"{r['label']} {budget_text(r)}": (t[f"adv/{r['attack']}"],
                                                      t[f"pred/{r['attack']}"].tolist())
                   for r in by_label.values()
                   if f"adv/{r['attack']}" in t and f"pred/{r['attack']}" in t}
        if not attacks or len(t["x"]) == 0:
            continue
        fig = attack_grid_figure(t["x"], attacks, t["pred_clean"].tolist(), classes,
                                 t["y"].tolist())
        report.figure(fig, f"defense {defense}: each column one image; rows: clean, then per "
                         "attack the adversarial image and its amplified perturbation")
        drawn += 1
    return drawn


def _text(v: Any, base: Path) -> str:
    """A stored value for a table cell: JSON text re-serialised with relative paths."""
    if isinstance(v, str) and v[:1] in "[{":
        try:
            v = json.loads(v)
        except ValueError:
            return v
    v = display_value(v, base)
    return json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else str(v)


def defense_rows(defenses: Sequence[Mapping[str, Any]], gradients: Sequence[Mapping[str, Any]],
                 base: Path) -> str:
    """The sortable defenses table with the zero-gradient count and mean gradient norm."""
    grads = {g["defense"]: g for g in gradients}
    rows = []
    for d in defenses:
        g = grads.get(d["defense"], {})
        rows.append([(d["defense"], None), (d["name"], None), (_text(d["options"], base), None),
                     *((str(bool(d[k])).lower(), None) for k in
                       ("is_randomized", "is_differentiable", "uses_bpda")),
                     _num(g.get("n_zero")), _num(g.get("mean_norm"))])
    return sortable_table(["defense", "name", "options", "randomized", "differentiable",
                           "BPDA", "zero-gradient inputs", "mean gradient L1"], rows)


def timing_rows(timings: Sequence[Mapping[str, Any]],
                results: Sequence[Mapping[str, Any]]) -> str:
    """The sortable timings table, attacks named by label and budget."""
    names = {r["attack"]: f"{r['label']} {budget_text(r)}" for r in results}
    return sortable_table(["defense", "attack", "batches", "seconds", "seconds per batch"], [
        [(t["defense"], None), (names.get(t["attack"], t["attack"]), None), _num(t["batches"]),
         _num(t["seconds"]), _num(t["seconds_per_batch"])] for t in timings])


def meta_rows(meta: Mapping[str, Any], base: Path) -> list[dict[str, Any]]:
    """The run's description as key/value rows: paths relative to ``base``, times readable."""
    rows = []
    for k, v in meta.items():
        if k == "started" and isinstance(v, int | float):
            v = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(v))
        rows.append({"key": k, "value": _text(v, base)})
    return rows
