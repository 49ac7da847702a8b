"""``advimage compare``: finished runs side by side (leaderboard HTML, CSV and JSON)."""

from __future__ import annotations

import argparse
from typing import Any

from advimage.cli.common import check_out_arg

__all__ = ["add_compare_parser", "cmd_compare"]

_EXAMPLES = """examples:
  advimage compare runs/baseline runs/quantize --out cmp/
  advimage compare runs/a runs/b --out cmp/ --allow-mismatch   # different data or budgets"""


def cmd_compare(a: argparse.Namespace) -> int:
    """Write the comparison of the runs into ``--out``."""
    from advimage.eval.compare import compare_runs

    check_out_arg(a, "dir")
    paths = compare_runs(a.runs, a.out, allow_mismatch=a.allow_mismatch)
    print(f"compare: {paths['html']} ({paths['csv'].name}, {paths['json'].name})")
    return 0


def add_compare_parser(sub: Any) -> None:
    """Add ``compare`` to the ``advimage`` sub-command parsers."""
    cp = sub.add_parser(
        "compare", help="compare finished runs like a leaderboard (HTML, CSV, JSON)",
        description="One row per run x defense: clean accuracy, robust accuracy per attack and "
                    "budget, the per-image worst case over attacks, AutoAttack, masking flags; "
                    "every rate with its Wilson 95% interval. Runs on different data or "
                    "budgets are refused unless --allow-mismatch.",
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    cp.add_argument("runs", nargs="+", metavar="RUN", help="run directories of `advimage run`")
    cp.add_argument("--out", required=True, metavar="DIR",
                    help="output folder: compare.html, compare.csv, compare.json")
    cp.add_argument("--allow-mismatch", action="store_true",
                    help="compare runs on different data or budgets (the page lists the "
                         "differences)")
    cp.add_argument("-v", "--verbose", action="store_true", help="log more")
    cp.set_defaults(func=cmd_compare)
