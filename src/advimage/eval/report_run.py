"""``advimage report RUN``: a self-contained HTML page and CSV/JSON exports of a run.

Reads only the run directory (``results.sqlite``, ``run.json``, ``config.json``,
``examples/*.safetensors``), so a report can be rebuilt at any time, also from a partial run.
The page holds the gradient-masking warnings (:mod:`advimage.eval.checks`), a sortable table of
clean and robust accuracy per defense, attack and budget (``k/255``, every rate with its Wilson
95% interval, :mod:`advimage.formatting`), accuracy-vs-eps curves with Wilson error bars, ROC
curves of the detectors, image grids (one column per image, each attack's adversarial image
and perturbation below the same clean image), gradient statistics and timings, each section
with a short "how to read this"; figures are inlined PNGs and the sorting script is inline, so
no network is needed. Paths are shown relative to the report's folder.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from advimage.eval.checks import Finding, run_configured_checks
from advimage.eval.compare_html import SORT_SCRIPT, sortable_table
from advimage.eval.report import HtmlReport
from advimage.eval.report_sections import (
    budget_text,
    defense_rows,
    grid_sections,
    meta_rows,
    results_table,
    roc_groups,
    timing_rows,
)
from advimage.eval.runner import CONFIG_NAME
from advimage.eval.store import DB_NAME, ResultStore
from advimage.formatting import display_model, format_eps, rate_interval
from advimage.utils import atomic_writer, write_json

__all__ = ["accuracy_vs_eps_figure", "roc_figure", "write_report"]

_READ_CHECKS = (
    "Carlini et al. (2019) list symptoms of evaluations that overstate robustness (gradient "
    "masking). A red box names a symptom and the defense it was seen on: treat that defense's "
    "robust accuracies as upper bounds until an adaptive attack (e.g. BPDA or EOT) confirms them.")
_READ_TABLE = (
    "One row per defense, attack and budget. Budgets are L-inf in pixel units of [0, 1] images "
    "(8/255 = eight grey levels) unless the norm says otherwise. 'clean' and 'robust' are shares "
    "of the n test images, with the Wilson 95% interval in brackets: two rows whose intervals "
    "overlap may not differ at all. The unbounded attack is a check (it should reach 0%), not a "
    "result. Click a column title to sort.")
_READ_CURVES = (
    "Robust accuracy against the budget, one line per attack; the dashed line and grey band are "
    "clean accuracy and its interval. Bars are Wilson 95% intervals. Curves should fall as the "
    "budget grows; a flat or rising curve is a masking symptom.")
_READ_ROC = (
    "Each curve trades clean images wrongly flagged (x) against fooling adversarial images "
    "caught (y); the diagonal is chance, AUC 1 is perfect. Higher score = flagged adversarial.")
_READ_GRIDS = (
    "One column per test image: the clean image and the model's prediction on top, below it "
    "each attack's adversarial image of the same image (largest budget of that attack) and its "
    "perturbation, amplified to fill the grey range. Red titles = the prediction changed.")
_READ_DEFENSES = (
    "Per defense: how it is built and whether the attacks could differentiate through it. "
    "Many inputs with a zero gradient or a tiny mean gradient norm mean gradient-based attacks "
    "had nothing to follow (a masking symptom).")
def _error_bars(pts: Sequence[tuple[float, float, int | None]]) -> list[list[float]]:
    """Lower and upper Wilson 95% distances of ``(eps, rate, n)`` points (0 without n)."""
    cis = [rate_interval(y, n) if n else (y, y) for _, y, n in pts]
    return [[max(0.0, p[1] - c[0]) for p, c in zip(pts, cis, strict=True)],
            [max(0.0, c[1] - p[1]) for p, c in zip(pts, cis, strict=True)]]


_NORM_NAMES = {"linf": "L-inf", "l2": "L2", "l1": "L1"}


def _eps_axis_label(norms: set[str]) -> str:
    """The x-axis title for budgets of ``norms`` (one norm per figure in run reports)."""
    if norms == {"l0"}:
        return "eps (L0 budget: pixels changed)"
    if len(norms) == 1 and next(iter(norms)) in _NORM_NAMES:
        return f"eps ({_NORM_NAMES[next(iter(norms))]} budget, [0, 1] images)"
    return "eps (budget, [0, 1] images)"


def accuracy_vs_eps_figure(rows: Sequence[Mapping[str, Any]], title: str = "") -> plt.Figure:
    """Robust accuracy against eps, one line per attack label (and norm) with Wilson 95% error
    bars where rows carry ``n``; clean accuracy dashed (its interval shaded); eps ticks as
    ``k/255``."""
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    lines: dict[tuple[str, str], list[tuple[float, float, int | None]]] = defaultdict(list)
    ticks: dict[float, str] = {}
    for r in rows:
        lines[(r["label"], r["norm"])].append(
            (float(r["eps"]), float(r["robust_accuracy"]), r.get("n")))
        ticks[float(r["eps"])] = format_eps(r["eps"], r["norm"])
    for (label, norm), pts in lines.items():
        pts.sort(key=lambda p: p[0])
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=_error_bars(pts),
                    marker="o", capsize=3, label=f"{label} ({norm})")
    if rows:
        clean, n = float(rows[0]["clean_accuracy"]), rows[0].get("n")
        ax.axhline(clean, color="gray", ls="--", label="clean")
        if n:
            ax.axhspan(*rate_interval(clean, n), color="gray", alpha=0.15, lw=0)
    if ticks:
        ax.set_xticks(list(ticks), list(ticks.values()), fontsize=8)
    ax.set_xlabel(_eps_axis_label({r["norm"] for r in rows}))
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def roc_figure(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
               title: str = "") -> tuple[plt.Figure, dict[str, float]]:
    """ROC curves of a detector: per name, (scores of clean images, scores of adversarials).

    Higher scores mean "adversarial". Returns the figure and the AUC of every curve (curves
    with one class only are skipped).
    """
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    aucs: dict[str, float] = {}
    for name, (clean, adv) in curves.items():
        if len(clean) == 0 or len(adv) == 0:
            continue
        y = np.r_[np.zeros(len(clean)), np.ones(len(adv))]
        s = np.r_[np.asarray(clean, dtype=float), np.asarray(adv, dtype=float)]
        fpr, tpr, _ = roc_curve(y, s)
        aucs[name] = float(roc_auc_score(y, s))
        ax.plot(fpr, tpr, label=f"{name} (AUC {aucs[name]:.3f})")
    ax.plot([0, 1], [0, 1], color="gray", ls=":", lw=1)
    ax.set_xlabel("false positive rate (clean flagged)")
    ax.set_ylabel("true positive rate (adversarial flagged)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig, aucs


def _write_csv(path: Path, rows: Iterable[Mapping[str, Any]], partial: bool) -> None:
    """Write ``rows`` with a ``partial`` column (atomic: the old file stays until done)."""
    with atomic_writer(path, newline="") as fh:
        w = None
        for row in rows:  # streamed: never all rows in memory
            if w is None:
                w = csv.DictWriter(fh, fieldnames=[*row, "partial"])
                w.writeheader()
            w.writerow({**row, "partial": partial})
        if w is None:  # no rows yet: the header still says so
            csv.writer(fh).writerow(["partial"])


def _export(run: Path, store: ResultStore, results: list[dict[str, Any]],
            findings: list[Finding], progress: dict[str, Any]) -> None:
    partial = progress["partial"]
    _write_csv(run / "results.csv", results, partial)
    write_json(run / "results.json", {**progress, "results": results,
                                      "findings": [vars(f) for f in findings]})
    _write_csv(run / "samples.csv", (dict(r) for r in store.iter_samples()), partial)
    scores = store.detector_scores()
    if scores:
        _write_csv(run / "detector_scores.csv", scores, partial)




def _checks_section(report: HtmlReport, checks: Mapping[str, Any], results: list[Any],
                    findings: list[Finding]) -> None:
    report.heading("Gradient-masking checks")
    report.how_to_read(_READ_CHECKS)
    if not checks.get("enabled", True):
        report.text("Checks disabled in the config.", "note")
    elif not results:
        report.text("No results stored yet: nothing to check.", "note")
    elif findings:
        for f in findings:
            report.warning(str(f))
    else:
        report.text("No symptom of gradient masking found (Carlini et al., 2019 checks).", "note")


def _accuracy_section(report: HtmlReport, config: Mapping[str, Any], results: list[Any]) -> None:
    report.heading("Clean and robust accuracy")
    report.how_to_read(_READ_TABLE)
    report.raw(results_table(results, [m for m in config.get("metrics", []) if m != "seconds"]))
    by_curve: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        if r["kind"] != "unbounded":
            by_curve[(r["defense"], r["norm"])].append(r)
    if by_curve:
        report.how_to_read(_READ_CURVES)
    several = len({norm for _, norm in by_curve}) > 1  # budgets of different norms: one axis each
    for (defense, norm), rows in by_curve.items():
        suffix = f", {norm}" if several else ""
        report.figure(accuracy_vs_eps_figure(rows, f"defense: {defense}{suffix}"),
                      f"robust accuracy vs eps, defense {defense}{suffix}; bars: Wilson 95% "
                      "intervals")


def _roc_section(report: HtmlReport, store: ResultStore, results: list[Any]) -> None:
    groups = roc_groups(store)
    if not groups:
        return
    names = {r["attack"]: f"{r['label']} {budget_text(r)}" for r in results}
    report.heading("Detectors (ROC)")
    report.how_to_read(_READ_ROC)
    for (defense, detector), curves in groups.items():
        curves = {names.get(k, k): v for k, v in curves.items()}
        fig, aucs = roc_figure(curves, f"{detector} on defense {defense}")
        report.figure(fig, f"ROC of detector {detector} (defense {defense})")
        report.raw(sortable_table(["attack", "AUC"], [[(k, None), (f"{v:.3f}", v)]
                                                      for k, v in aucs.items()]))


def _progress_text(p: dict[str, Any]) -> str:
    of = "" if p["batches_total"] is None else f" of {p['batches_total']}"
    return f"{p['batches_done']}{of} batches done" + (
        " (run not finished: partial results)" if p["partial"] else "")


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` (or ``out``) and the CSV/JSON exports of run ``run_dir``."""
    run = Path(run_dir)
    if not (run / DB_NAME).is_file():
        raise ValueError(f"not a run directory (no {DB_NAME}): {run}")
    target = Path(out) if out else run / "report.html"
    base = target.parent
    config = json.loads((run / CONFIG_NAME).read_text(encoding="utf-8"))
    meta = json.loads((run / "run.json").read_text(encoding="utf-8"))
    checks = config.get("checks", {})
    with ResultStore(run / DB_NAME) as store:
        results, defenses, gradients = store.results(), store.defenses(), store.gradients()
        findings = run_configured_checks(checks, results, defenses, lambda: gradients)
        progress = store.progress()
        _export(run, store, results, findings, progress)

        report = HtmlReport(f"advimage run: {config['name']}")
        if config.get("description"):
            report.text(config["description"])
        report.text(f"Model {display_model(str(config['model']['path']), base)}; data "
                    f"{config['data']['name']}/{config['data']['split']}; "
                    f"{_progress_text(progress)}.")
        if progress["partial"]:
            report.warning(f"Partial results: {_progress_text(progress)}; run the other "
                           "shards or resume the run for the full numbers.")
        _checks_section(report, checks, results, findings)
        _accuracy_section(report, config, results)
        _roc_section(report, store, results)
        report.heading("Examples")
        report.how_to_read(_READ_GRIDS)
        if not grid_sections(report, run, results, store.get_meta("classes")):
            report.text("No example images stored (config 'examples: 0').", "note")
        report.heading("Defenses and gradients")
        report.how_to_read(_READ_DEFENSES)
        report.raw(defense_rows(defenses, gradients, base))
        if "seconds" in config.get("metrics", ["seconds"]):
            report.heading("Timings")
            report.how_to_read("Wall-clock seconds per defense and attack, summed over batches.")
            report.raw(timing_rows(store.timings(), results))
    report.heading("Run")
    report.table(meta_rows(meta, base))
    report.raw(SORT_SCRIPT)
    return report.save(target)
