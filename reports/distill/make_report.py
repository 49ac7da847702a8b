"""Markdown tables and bar charts of the transfer experiment (Ojha et al., NeurIPS 2023).

Usage: python reports/distill/make_report.py RUNS_DIR -o reports/distill [--train-runs DIR ...]

Reads every ``transfer.json`` under RUNS_DIR (one per teacher, student architecture and seed, from
``advimage eval transfer``) and every training sidecar ``model.json`` under the ``--train-runs``
folders (default: RUNS_DIR); writes README.md, one bar chart per probe and one Grad-CAM overlay
grid per group. The report itself is :func:`advimage.studies.distill.report.build_report`.
The committed report is rebuilt with::

    python reports/distill/make_report.py reports/distill/data/transfer \\
        --train-runs reports/distill/data/train --preface reports/distill/preface.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from advimage.studies.distill.report import build_report
from advimage.studies.distill.report_html import write_html


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and build the report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, help="folder holding transfer.json files (recursively)")
    p.add_argument("-o", "--out", type=Path, default=Path(__file__).parent)
    p.add_argument("--train-runs", type=Path, action="append", default=None,
                   help="folders holding training model.json sidecars (default: RUNS)")
    p.add_argument("--preface", type=Path, default=None,
                   help="markdown inserted after the title (setup, deviations, findings)")
    p.add_argument("--html", action="store_true",
                   help="also write report.html (one self-contained page) into --out")
    a = p.parse_args(argv)
    try:
        build_report(a.runs, a.out, train_runs=a.train_runs, preface=a.preface)
        if a.html:
            write_html(a.out)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
