"""The transfer-probe report (Ojha et al., NeurIPS 2023, "What Knowledge Gets Distilled in
Knowledge Distillation?") as one self-contained HTML page: the README that
:func:`advimage.studies.distill.report.build_report` wrote, with sortable tables, figures
inlined, Wilson 95% intervals beside every single-seed rate (fooling rates over the kept images,
agreement, accuracy, Grad-CAM share and invariance over the table's ``n``, training accuracies
over their test images) and a "how to read this" per section
(:func:`advimage.eval.report_md.markdown_page`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from advimage.eval.report_md import cell_value, markdown_page, wilson_cell

__all__ = ["NOTES", "write_html"]

NOTES = {
    "Adversarial vulnerability": (
        "Fooling rate in %: the share of the kept adversarial images (crafted on the teacher, "
        "kept where the teacher was fooled) that also fool the student. KD students should be "
        "fooled more often than independently trained ones (the 'gap'). Single-seed rates carry "
        "a Wilson 95% interval over the kept images; several seeds show mean ± std instead."),
    "Agreement": (
        "Top-1 agreement with the teacher on clean images, and each model's accuracy, in % of "
        "the n test images; single-seed rates carry a Wilson 95% interval over n, several "
        "seeds show mean ± std instead."),
    "Localization": (
        "How often the KD student's Grad-CAM map is closer to the teacher's (% of n images; "
        "single seed: Wilson 95% interval; chance 50%)."),
    "Invariance": (
        "Prediction agreement under colour jitter (% of n images; single seed: Wilson 95% "
        "interval): does KD pass the teacher's on?"),
    "Grad-CAM": "Per row one image: input, then teacher, KD and independent student maps.",
    "Training runs": (
        "The recipes and final test accuracy of every trained model, with its Wilson 95% "
        "interval over the test images it was measured on."),
}
_RATE_SECTIONS = ("agreement", "localization", "invariance")  # the rates: columns after n


def _n(header: Sequence[str], row: Sequence[str], column: str) -> int | None:
    v = cell_value(row[header.index(column)]) if column in header else None
    return None if v is None else int(v)


def _hook(section: str, header: Sequence[str], row: Sequence[str], j: int) -> str | None:
    """A rate cell with its Wilson interval over the row's images (``None``: keep the cell)."""
    s, h = section.lower(), header[j]
    if s.startswith("adversarial"):
        n = _n(header, row, "kept (mean)") if h in ("KD", "independent") else None
    elif s.startswith("training"):
        n = _n(header, row, "test images") if h == "test accuracy (%)" else None
    elif s.startswith(_RATE_SECTIONS):
        n = _n(header, row, "n") if "n" in header and j > header.index("n") else None
    else:
        return None
    return wilson_cell(row[j], n)


def write_html(out: str | Path, name: str = "report.html") -> Path:
    """Write ``out/name`` from ``out/README.md`` (figures next to it are inlined).

    Raises:
        ValueError: no README.md in ``out`` (build the markdown report first).
    """
    out = Path(out)
    readme = out / "README.md"
    if not readme.is_file():
        raise ValueError(f"{readme} missing: build the distillation report first")
    page = markdown_page(readme.read_text(encoding="utf-8"), out, notes=NOTES, hook=_hook)
    return page.save(out / name)
