"""reports/imagenet/README.md's tables trace to the committed run (reports/imagenet/data/robust).

Every robust accuracy and Wilson 95% interval the README prints is recomputed from the run's
results.csv (n = 500), so an edited figure or a re-run without updating the README fails here.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

REPORT = Path(__file__).resolve().parents[2] / "reports" / "imagenet"
ROWS = {"FGSM": "fgsm", "PGD-20": "pgd", "APGD-CE-100": "apgd-ce", "AutoAttack (standard)":
        "autoattack"}
L2_ROWS = {"PGD-20": "pgd-l2", "APGD-CE-100": "apgd-ce-l2"}


def _wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def _cell(p: float, n: int) -> str:
    lo, hi = _wilson(p, n)
    return f"{100 * p:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _table_rows(text: str, header: str) -> dict[str, list[str]]:
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(header))
    rows = {}
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        cells = [c.strip().replace("**", "") for c in ln.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_readme_tables_match_the_committed_run() -> None:
    with (REPORT / "data" / "robust" / "results.csv").open() as fh:
        results = list(csv.DictReader(fh))
    assert {r["partial"] for r in results} == {"False"}
    by = {(r["label"], round(float(r["eps"]), 6)): r for r in results}
    readme = (REPORT / "README.md").read_text()
    linf = _table_rows(readme, "| attack | 1/255 |")
    for row, label in ROWS.items():
        want = [_cell(float(by[(label, round(k / 255, 6))]["robust_accuracy"]),
                      int(by[(label, round(k / 255, 6))]["n"])) for k in (1, 2, 4)]
        assert linf[row] == want, row
    l2 = _table_rows(readme, "| attack | L2 0.25 |")
    for row, label in L2_ROWS.items():
        want = [_cell(float(by[(label, e)]["robust_accuracy"]), 500) for e in (0.25, 0.5)]
        assert l2[row] == want, row
    clean = {float(r["clean_accuracy"]) for r in results}
    assert clean == {0.696}
    assert "**69.6%** (348/500; Wilson 95% interval 65.4-73.5%)" in readme
