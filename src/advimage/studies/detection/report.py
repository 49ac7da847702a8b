"""Tables and ROC figures of a detection run (Hu, Yu et al., NeurIPS 2019).

"A New Defense Against Adversarial Images: Turning a Weakness into a Strength" reports, per
attack, the detection rate of successful adversarial images at fixed false-positive rates and
ROC curves; :func:`write_report` writes both for a run folder of ``advimage eval detection``
(its SQLite store, read through :mod:`advimage.eval.detection_store`), as
``reports/detection/make_report.py`` does for the committed runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from advimage.detect.metrics import roc_curves
from advimage.eval.detection_store import DetectionView, detection_results, read_detection
from advimage.eval.plots import md_row, md_table, save_png
from advimage.eval.report_run import roc_figure
from advimage.eval.store import DB_NAME, ResultStore
from advimage.studies.detection.report_html import write_html

__all__ = ["PLOTS", "load_run", "table_lines", "write_report"]

# the attacks whose ROC curves the CIFAR-10 report draws
PLOTS = ("gray-pgd@0.03137", "gray-cw@0.1", "pgd-untargeted@0.03137", "white-pgd@0.03137",
         "white-cw@0.03137", "adaptive@0.03137")


def load_run(run: str | Path) -> DetectionView:
    """The stored sets of the detection run in folder ``run`` (store verified on open)."""
    db = Path(run) / DB_NAME
    if not db.is_file():
        raise ValueError(f"{run} is not a detection run folder (no {DB_NAME})")
    with ResultStore(db) as store:
        return read_detection(store)


def table_lines(view: DetectionView) -> list[str]:
    """The Markdown table: per attack and criterion, success, DR at each FPR, AUC."""
    res = detection_results(view)
    lines = [
        f"Calibration: {res['n_calibration_correct']}/{res['n_calibration']} calibration images "
        f"correct; evaluation: {res['n_test_correct']}/{res['n_test']} test images correct.",
        "",
        *md_table(["attack", "success", "n", "crit", "DR@5% (test FPR)", "DR@10% (test FPR)",
                   "DR@20% (test FPR)", "AUC"]),
    ]
    for name, r in res["attacks"].items():
        for crit in [*res["criteria"], "combined"]:
            cells = [f"{x['detection_rate']:.3f} ({x['fpr_test']:.3f})" for x in r["rates"]
                     if x["criterion"] == crit]
            lines.append(md_row([name, f"{r['success_rate']:.3f}", r["n_success"], crit, *cells,
                                 f"{r['auc'][crit]:.3f}"]))
    return lines


def _roc_png(view: DetectionView, name: str, path: Path) -> None:
    calib, clean, ok = view.clean_scores()
    rec = view.attack_sets[name]
    succ = ok & (rec.pred != rec.y)  # an attack set keeps the test labels
    curves = roc_curves(calib, clean, {k: v[succ] for k, v in rec.scores.items()})
    fig, _ = roc_figure(dict(curves), f"ROC, {name}")
    # roc_figure already laid the figure out; save_png also closes it (one per attack)
    save_png(fig, path, dpi=70, tight=False)


def write_report(run: str | Path, out: str | Path, suffix: str = "",
                 plots: Sequence[str] = PLOTS, html: bool = False) -> list[Path]:
    """Write ``tables[-SUFFIX].md`` and ``roc[-SUFFIX]-ATTACK.png`` of ``plots`` into ``out``;
    ``html`` also writes the same as one page, ``report[-SUFFIX].html``
    (:mod:`advimage.studies.detection.report_html`).

    Returns:
        The files written.
    """
    view, out = load_run(run), Path(out)
    written = []
    stem = f"roc-{suffix}-" if suffix else "roc-"
    for name in view.attack_sets:
        if name in plots:
            written.append(out / f"{stem}{name.replace('@', '-')}.png")
            _roc_png(view, name, written[-1])
    tables = out / (f"tables-{suffix}.md" if suffix else "tables.md")
    lines = table_lines(view)
    tables.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if html:
        written.append(write_html(lines, written, out,
                                  f"report-{suffix}.html" if suffix else "report.html"))
    return [*written, tables]
