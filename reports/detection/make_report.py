"""Tables and ROC PNGs of a finished (or partial) `advimage eval detection` run.

Usage: python reports/detection/make_report.py RUN_DIR [SUFFIX] [--no-plots] [--plots A,B]:
writes tables[-SUFFIX].md and the ROC PNGs roc[-SUFFIX]-ATTACK.png of the attacks in PLOTS (or
``--plots``) here (``--no-plots``: tables only, for a second calibration of the same images).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from advimage.detect.evaluation import roc_curves
from advimage.eval.plots import md_row, md_table, save_png
from advimage.eval.report_run import roc_figure

HERE = Path(__file__).parent
PLOTS = ("gray-pgd@0.03137", "gray-cw@0.1", "pgd-untargeted@0.03137", "white-pgd@0.03137",
         "white-cw@0.03137", "adaptive@0.03137")


def main(run: Path, suffix: str = "", plots: bool = True,
         plot_names: tuple[str, ...] = PLOTS) -> None:
    res = json.loads((run / "results.json").read_text())
    cal = torch.load(run / "calibration.pt", weights_only=True)
    clean = torch.load(run / "clean.pt", weights_only=True)
    ok_cal, ok = cal["pred"] == cal["y"], clean["pred"] == clean["y"]
    calib = {k: v[ok_cal] for k, v in cal["scores"].items()}
    clean_s = {k: v[ok] for k, v in clean["scores"].items()}
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
        if not plots or name not in plot_names:
            continue
        rec = torch.load(run / f"attack-{name}.pt", weights_only=True)
        y = clean["y"]
        succ = ok & (rec["pred"] != y)
        adv = {k: v[succ] for k, v in rec["scores"].items()}
        curves = roc_curves(calib, clean_s, adv)
        fig, _ = roc_figure({k: (c, a) for k, (c, a) in curves.items()}, f"ROC, {name}")
        # roc_figure already laid the figure out; save_png also closes it (one per attack)
        stem = f"roc-{suffix}-" if suffix else "roc-"
        save_png(fig, HERE / f"{stem}{name.replace('@', '-')}.png", dpi=70, tight=False)
    name = f"tables-{suffix}.md" if suffix else "tables.md"
    (HERE / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="run folder of advimage eval detection")
    ap.add_argument("suffix", nargs="?", default="", help="tables-SUFFIX.md, roc-SUFFIX-*.png")
    ap.add_argument("--no-plots", action="store_true", help="tables only")
    ap.add_argument("--plots", default=",".join(PLOTS),
                    help="comma-separated attack names to draw ROC curves for")
    a = ap.parse_args()
    main(a.run, a.suffix, plots=not a.no_plots, plot_names=tuple(a.plots.split(",")))
