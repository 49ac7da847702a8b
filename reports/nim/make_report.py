"""Tables, trade-off plot and image rows of a De^3 harness run (You et al., NeurIPS 2023,
"Beyond Pretrained Features: Noisy Image Modeling Provides Adversarial Defense").

Usage: python reports/nim/make_report.py RUN_DIR -o reports/nim [--baseline LABEL=RUN_DIR ...]
       [--train NAME=DIR ...] [--preface preface.md] [--images N] [--attack LABEL@EPS]
       [--image-defense LABEL ...]

RUN_DIR is a folder written by ``advimage run`` (results.json, config.json, samples.csv for the
per-image worst case over the attacks of each budget, examples/). ``--baseline`` adds the
``none`` rows of other runs (e.g. a PGD-adversarially-trained classifier), which must have
RUN_DIR's data section and, for the attacks both ran, its attack settings; ``--train`` adds
wall-clock rows of NIM/MIM pretraining (``nim.json``) or classifier (``metrics.jsonl``)
folders. Writes README.md, tradeoff.png and images-<defense>.png. Inputs are all checked before
anything is written. The logic is :mod:`advimage.studies.nim.report`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from advimage.studies.nim.report import write_report
from advimage.studies.nim.report_html import write_html
from advimage.studies.nim.report_run import parse_pairs


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and write the report; bad inputs exit with one line."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("run", type=Path, help="harness run folder (results.json, config.json)")
    p.add_argument("-o", "--out", type=Path, default=Path(__file__).parent)
    p.add_argument("--baseline", action="append", metavar="LABEL=RUN_DIR",
                   help="another run (same images, same attack settings) whose 'none' rows "
                   "are a baseline (repeatable)")
    p.add_argument("--train", action="append", metavar="NAME=DIR",
                   help="training folder (nim.json or metrics.jsonl) for the wall-clock table")
    p.add_argument("--preface", type=Path, default=None, help="markdown put first")
    p.add_argument("--images", type=int, default=4, help="example images per image grid")
    p.add_argument("--attack", default=None, metavar="LABEL@EPS",
                   help="trade-off/claims attack, e.g. pgd@8/255 (default: strongest PGD 8/255)")
    p.add_argument("--image-defense", action="append", metavar="LABEL",
                   help="defense(s) for image grids (default: NIM and MIM at the middle sigma)")
    p.add_argument("--html", action="store_true",
                   help="also write report.html (one self-contained page) into --out")
    a = p.parse_args(argv)
    try:
        baselines = parse_pairs(a.baseline, "--baseline")
        trains = parse_pairs(a.train, "--train")
        preface = a.preface.read_text(encoding="utf-8").strip() if a.preface else None
        write_report(a.run, a.out, baselines=baselines, trains=trains, preface=preface,
                     attack=a.attack, image_defenses=a.image_defense, n_images=a.images)
        if a.html:
            write_html(a.out)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
