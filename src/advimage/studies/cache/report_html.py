"""The cache-model report (Orhan, 2018, "A Simple Cache Model for Image Recognition") as one
self-contained HTML page: the sections of :func:`advimage.studies.cache.report.build_report`
with sortable tables, the PNG plots inlined, Wilson 95% intervals beside every accuracy (the
clean accuracies over the accuracy table's ``n`` and the depth table's ``n = ...``, kept at the
table's two decimals; the robust ones over the robustness run's ``n``) and a "how to read this"
per section (:func:`advimage.eval.report_md.markdown_page`)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from advimage.eval.report_md import markdown_page, wilson_cell
from advimage.formatting import rate_interval

__all__ = ["NOTES", "write_html"]

NOTES = {
    "accuracy": (
        "Clean test accuracy of the baseline network, the network plus cache, and the cache "
        "alone on n test images, each with its Wilson 95% interval; the last two columns are "
        "gains in points with their 95% interval (paired bootstrap)."),
    "depth": (
        "Cache-only accuracy when the keys are taken from one layer, with its Wilson 95% "
        "interval over the n test images in the column title: deeper layers give better keys; "
        "'best over theta' picks theta on the test set (an oracle, for reference)."),
    "robustness": (
        "Accuracy in % of the n test images under each attack (rows: attack, steps and the "
        "model it was crafted on) for the three classifiers, with Wilson 95% intervals; "
        "'worst case' counts an image only if it survived every attack of that budget. Budgets "
        "are L-inf, k/255."),
    "minimal budgets": (
        "Per image the smallest L-inf budget (in 1/255) at which an attack fooled it; larger "
        "is more robust. The plot shows the share of images fooled up to each budget (its "
        "Wilson 95% interval shaded)."),
}
_PLOTS = ("depth.png", "robust_eps.png", "minimal_eps.png")
_CLASSIFIERS = ("baseline", "cache", "cache-only")
_RATE = re.compile(r"^\s*(\d+(?:\.(\d+))?)%")  # "91.73% ...": the percentage and its decimals
_N_TITLE = re.compile(r"n = (\d+)")


def with_interval(text: str, n: int | None) -> str | None:
    """``91.73% [91.18, 92.25]``: a percentage cell with its Wilson 95% interval over ``n``
    images at the cell's own decimals, any text after it kept (None: no percentage or no n)."""
    m = _RATE.match(text)
    if m is None or not n:
        return None
    digits = len(m.group(2) or "")
    lo, hi = rate_interval(float(m.group(1)) / 100, n)
    return f"{m.group(0)} [{100 * lo:.{digits}f}, {100 * hi:.{digits}f}]{text[m.end():]}"


def _hook(n_by_run: dict[str, int]) -> object:
    def hook(section: str, header: Sequence[str], row: Sequence[str], j: int) -> str | None:
        if section.startswith("robustness (") and header[j] in _CLASSIFIERS:
            return wilson_cell(row[j], n_by_run.get(section[len("robustness ("):-1]))
        if section == "accuracy" and header[j] in _CLASSIFIERS and "n" in header:
            n = row[header.index("n")]
            return with_interval(row[j], int(n) if n.isdigit() else None)
        m = _N_TITLE.search(header[j]) if section == "depth" else None
        return None if m is None else with_interval(row[j], int(m.group(1)))

    return hook


def write_html(markdown: str, runs: Path, out: Path, robust: Sequence[str],
               name: str = "report.html") -> Path:
    """Write ``out/name`` from ``markdown`` (:func:`build_report`'s sections); the PNG plots in
    ``out`` that the sections do not show already are appended."""
    n_by_run = {}
    for r in robust:
        path = runs / "robust" / r / "robust.json"
        if path.is_file():
            n_by_run[r] = int(json.loads(path.read_text(encoding="utf-8"))["n"])
    extra = [f"![{p}]({p})" for p in _PLOTS if (out / p).is_file() and f"({p})" not in markdown]
    md = "\n".join(["# Cache model (Orhan, 2018) on CIFAR-10", markdown, "", "## Figures", "",
                    *extra])
    page = markdown_page(md, out, notes={**NOTES, "figures": "The plots of the sections above."},
                         hook=_hook(n_by_run))  # type: ignore[arg-type]
    return page.save(out / name)
