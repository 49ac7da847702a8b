"""Tables and ROC PNGs of a finished (or partial) `advimage eval detection` run.

Usage: python reports/detection/make_report.py RUN_DIR [SUFFIX] [--no-plots] [--plots A,B]:
writes tables[-SUFFIX].md and the ROC PNGs roc[-SUFFIX]-ATTACK.png of the attacks in PLOTS (or
``--plots``) here (``--no-plots``: tables only, for a second calibration of the same images).
The logic is :func:`advimage.studies.detection.write_report`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from advimage.studies.detection.report import PLOTS, write_report

HERE = Path(__file__).parent


def main(run: Path, suffix: str = "", plots: bool = True,
         plot_names: tuple[str, ...] = PLOTS, html: bool = False) -> None:
    write_report(run, HERE, suffix, plot_names if plots else (), html=html)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="run folder of advimage eval detection")
    ap.add_argument("suffix", nargs="?", default="", help="tables-SUFFIX.md, roc-SUFFIX-*.png")
    ap.add_argument("--no-plots", action="store_true", help="tables only")
    ap.add_argument("--plots", default=",".join(PLOTS),
                    help="comma-separated attack names to draw ROC curves for")
    ap.add_argument("--html", action="store_true",
                    help="also write report[-SUFFIX].html (one self-contained page)")
    a = ap.parse_args()
    main(a.run, a.suffix, plots=not a.no_plots, plot_names=tuple(a.plots.split(",")),
         html=a.html)
