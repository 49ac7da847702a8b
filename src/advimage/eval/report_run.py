"""``advimage report RUN``: a self-contained HTML page and CSV/JSON exports of a run.

Reads only the run directory (``results.sqlite``, ``run.json``, ``config.json``,
``examples/*.safetensors``), so a report can be rebuilt at any time, also from a partial run.
The page holds the gradient-masking warnings (:mod:`advimage.eval.checks`), a table of clean
and robust accuracy per defense, attack and eps, accuracy-vs-eps curves, ROC curves of the
detectors, image grids (clean, adversarial, amplified perturbation, predictions), gradient
statistics and timings; all figures are inlined PNGs (matplotlib), so no network is needed.
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
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score, roc_curve

from advimage.eval.checks import Finding, run_configured_checks
from advimage.eval.report import HtmlReport, image_grid_figure
from advimage.eval.run_batch import EXAMPLES_DIR
from advimage.eval.runner import CONFIG_NAME
from advimage.eval.store import DB_NAME, ResultStore
from advimage.utils import atomic_writer, write_json

__all__ = ["accuracy_vs_eps_figure", "roc_figure", "write_report"]

_TABLE_COLUMNS = ("defense", "attack", "kind", "norm", "eps", "steps", "n")


def accuracy_vs_eps_figure(rows: Sequence[Mapping[str, Any]], title: str = "") -> plt.Figure:
    """Robust accuracy against eps, one line per attack label (and norm); clean accuracy dashed."""
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    lines: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        lines[(r["label"], r["norm"])].append((float(r["eps"]), float(r["robust_accuracy"])))
    for (label, norm), pts in lines.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{label} ({norm})")
    if rows:
        ax.axhline(float(rows[0]["clean_accuracy"]), color="gray", ls="--", label="clean")
    ax.set_xlabel("eps (pixel units, [0, 1] images)")
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


def _roc_sections(report: HtmlReport, store: ResultStore) -> None:
    rows = store.conn.execute(
        "SELECT d.defense, d.detector, d.attack, d.clean_score, d.adv_score, "
        "s.clean_correct AND NOT s.robust_correct AS fooled FROM detector_scores d JOIN samples s "
        "ON s.sample = d.sample AND s.defense = d.defense AND s.attack = d.attack "
        "ORDER BY d.defense, d.detector, d.attack, d.sample").fetchall()
    if not rows:
        return
    report.heading("Detectors (ROC)")
    report.text("Scores of every clean image against those of the adversarial images that "
                "fooled the model; higher score = flagged as adversarial.")
    groups: dict[tuple[str, str], dict[str, tuple[list[float], list[float]]]] = defaultdict(dict)
    for defense, detector, attack, clean, adv, fooled in rows:
        c, a = groups[(defense, detector)].setdefault(attack, ([], []))
        c.append(clean)
        if fooled:
            a.append(adv)
    for (defense, detector), curves in groups.items():
        fig, aucs = roc_figure(curves, f"{detector} on defense {defense}")
        report.figure(fig, f"ROC of detector {detector} (defense {defense})")
        report.table([{"attack": k, "auc": v} for k, v in aucs.items()])


def _grids(report: HtmlReport, run: Path, results: list[dict[str, Any]],
           classes: Sequence[str] | None) -> None:
    strongest: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:  # per (defense, label) the largest eps
        if r["kind"] == "unbounded":
            continue
        key = (r["defense"], r["label"])
        if key not in strongest or r["eps"] > strongest[key]["eps"]:
            strongest[key] = r
    if not strongest:
        return
    report.heading("Examples")
    for (defense, _), r in strongest.items():
        path = run / EXAMPLES_DIR / f"{defense}.safetensors"
        if not path.exists():
            continue
        t = load_file(str(path))
        adv, pred = t.get(f"adv/{r['attack']}"), t.get(f"pred/{r['attack']}")
        if adv is None or pred is None or len(adv) == 0:
            continue
        fig = image_grid_figure(t["x"], adv, t["pred_clean"].tolist(), pred.tolist(),
                                classes, t["y"].tolist())
        report.figure(fig, f"{r['attack']} against defense {defense}: clean image, "
                           "adversarial image, amplified perturbation; red = prediction changed")


def _progress_text(p: dict[str, Any]) -> str:
    of = "" if p["batches_total"] is None else f" of {p['batches_total']}"
    return f"{p['batches_done']}{of} batches done" + (
        " (run not finished: partial results)" if p["partial"] else "")


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` (or ``out``) and the CSV/JSON exports of run ``run_dir``."""
    run = Path(run_dir)
    if not (run / DB_NAME).is_file():
        raise ValueError(f"not a run directory (no {DB_NAME}): {run}")
    config = json.loads((run / CONFIG_NAME).read_text(encoding="utf-8"))
    meta = json.loads((run / "run.json").read_text(encoding="utf-8"))
    checks = config.get("checks", {})
    with ResultStore(run / DB_NAME) as store:
        results = store.results()
        defenses = store.defenses()
        gradients = store.gradients()
        findings = run_configured_checks(checks, results, defenses, lambda: gradients)
        progress = store.progress()
        _export(run, store, results, findings, progress)

        report = HtmlReport(f"advimage run: {config['name']}")
        if config.get("description"):
            report.text(config["description"])
        report.text(f"Model {config['model']['path']}; data {config['data']['name']}/"
                    f"{config['data']['split']}; {_progress_text(progress)}.")
        if progress["partial"]:
            report.warning(f"Partial results: {_progress_text(progress)}; run the other "
                           "shards or resume the run for the full numbers.")
        report.heading("Gradient-masking checks")
        if not checks.get("enabled", True):
            report.text("Checks disabled in the config.", "note")
        elif not results:
            report.text("No results stored yet: nothing to check.", "note")
        elif findings:
            for f in findings:
                report.warning(str(f))
        else:
            report.text("No symptom of gradient masking found (Carlini et al., 2019 checks).",
                        "note")
        report.heading("Clean and robust accuracy")
        metrics = [m for m in config.get("metrics", []) if m != "seconds"]
        report.table(results, [*_TABLE_COLUMNS, *metrics])
        by_defense: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in results:
            if r["kind"] != "unbounded":
                by_defense[r["defense"]].append(r)
        for defense, rows in by_defense.items():
            report.figure(accuracy_vs_eps_figure(rows, f"defense: {defense}"),
                          f"robust accuracy vs eps, defense {defense}")
        _roc_sections(report, store)
        _grids(report, run, results, store.get_meta("classes"))
        report.heading("Defenses and gradients")
        grads = {g["defense"]: g for g in gradients}
        report.table([{**{k: d[k] for k in ("defense", "name", "options", "is_randomized",
                                             "is_differentiable", "uses_bpda")},
                       "zero_grad_inputs": grads.get(d["defense"], {}).get("n_zero"),
                       "mean_grad_l1": grads.get(d["defense"], {}).get("mean_norm")}
                      for d in defenses])
        if "seconds" in config.get("metrics", ["seconds"]):
            report.heading("Timings")
            report.table(store.timings())
    report.heading("Run")
    report.table([{"key": k, "value": v} for k, v in meta.items()])
    return report.save(Path(out) if out else run / "report.html")
