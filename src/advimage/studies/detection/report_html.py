"""The detection report (Hu, Yu et al., NeurIPS 2019, "A New Defense Against Adversarial
Images: Turning a Weakness into a Strength") as one self-contained HTML page: the table of
:func:`advimage.studies.detection.report.table_lines` with sortable columns, budgets as
``k/255``, Wilson 95% intervals beside the success and detection rates, the ROC PNGs inlined
and a "how to read this" per section (:func:`advimage.eval.report_md.markdown_page`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from advimage.eval.report_md import markdown_page, wilson_cell
from advimage.formatting import format_eps

__all__ = ["NOTES", "eps_name", "write_html"]

NOTES = {
    "Detection rates": (
        "One row per attack (name@budget) and criterion: criterion 1 (c1) flags images whose "
        "loss is unusually small, criterion 2 (c2t) those that a small random step does not "
        "move; 'combined' flags either. 'success' is the share of correctly classified test "
        "images the attack fooled; DR@x% is the share of fooled images flagged at the threshold "
        "calibrated for x% false positives on calibration images, with the false-positive rate "
        "measured on the test images in parentheses. Rates carry Wilson 95% intervals. AUC: 0.5 "
        "is chance, 1 is perfect."),
    "ROC curves": (
        "Per attack: clean test images wrongly flagged (x) against fooling adversarial images "
        "caught (y) for each criterion; the diagonal is chance."),
}
_NAME_EPS = re.compile(r"@(\d*\.\d+|\d+)$")


def eps_name(name: str) -> str:
    """``gray-pgd@0.03137`` as ``gray-pgd@8/255``: a budget rounded to 5 decimals (as the runs
    name them) that is a multiple of 1/255 reads as ``k/255``; other names unchanged."""
    m = _NAME_EPS.search(name)
    if m is None:
        return name
    eps = float(m.group(1))
    k = round(eps * 255)
    decimals = len(m.group(1).split(".")[1]) if "." in m.group(1) else 0
    if k >= 1 and abs(eps - k / 255) <= 0.5 * 10.0 ** -decimals and decimals >= 4:
        return f"{name[:m.start()]}@{format_eps(k / 255)}"
    return name


def _hook(n_correct: int) -> object:
    def hook(section: str, header: Sequence[str], row: Sequence[str], j: int) -> str | None:
        h = header[j]
        if h == "attack":
            return eps_name(row[j])
        if h == "success":
            return wilson_cell(row[j], n_correct, percent=False)
        if h.startswith("DR@"):
            rate, _, fpr = row[j].partition(" ")
            ci = wilson_cell(rate, int(row[header.index("n")]), percent=False)
            return None if ci is None else f"{ci} at FPR {fpr.strip('()')}"
        return None

    return hook


def write_html(lines: Sequence[str], pngs: Sequence[Path], out: str | Path,
               name: str = "report.html") -> Path:
    """Write ``out/name``: the table ``lines`` (from ``table_lines``) and the ROC ``pngs``.

    Raises:
        ValueError: the table has no calibration line (not from ``table_lines``).
    """
    out = Path(out)
    m = re.search(r"evaluation: (\d+)/(\d+) test images correct", lines[0] if lines else "")
    if m is None:
        raise ValueError("write_html needs the lines of detection.report.table_lines")
    md = ["# Detection report", "", "## Detection rates", "", *lines, "", "## ROC curves", ""]
    md += [f"![ROC {p.stem.removeprefix('roc-')}]({p.name})" for p in pngs]
    page = markdown_page("\n".join(md), out, notes=NOTES,
                         hook=_hook(int(m.group(1))))  # type: ignore[arg-type]
    return page.save(out / name)
