"""Rebuild the tables and PNG plots of ``reports/cache/README.md`` from ``runs/cache``.

Usage (repository root): ``python reports/cache/make_report.py [--runs runs/cache]``.
Prints the markdown tables; the prose of README.md is written by hand around them.
Studies: ``python -m advimage.studies.cache.study {accuracy,depth,robust,topm,minimal} ...``.
The logic is :mod:`advimage.studies.cache.report`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from advimage.studies.cache.report import build_report
from advimage.studies.cache.report_html import write_html

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, write the PNGs next to this script and print the tables."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--runs", type=Path, default=Path("runs/cache"))
    p.add_argument("--robust", default="resnet20_n500,resnet20",
                   help="robustness run folders under runs/cache/robust (first one plotted)")
    p.add_argument("-o", "--out", type=Path, default=HERE, help="folder for the PNG plots")
    p.add_argument("--html", action="store_true",
                   help="also write report.html (one self-contained page) into --out")
    a = p.parse_args(argv)
    text = build_report(a.runs, a.out, a.robust.split(","))
    sys.stdout.write(text)
    if a.html:
        write_html(text, a.runs, a.out, a.robust.split(","))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
