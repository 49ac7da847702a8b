"""The transfer-probe report (Ojha et al., NeurIPS 2023, "What Knowledge Gets Distilled in
Knowledge Distillation?") as one self-contained HTML page: the README that
:func:`advimage.studies.distill.report.build_report` wrote, with sortable tables, figures
inlined, Wilson 95% intervals beside single-seed fooling rates and a "how to read this" per
section (:func:`advimage.eval.report_md.markdown_page`)."""

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
    "Agreement": "Top-1 agreement with the teacher on clean images, and each model's accuracy.",
    "Localization": "How often the KD student's Grad-CAM map is closer to the teacher's.",
    "Invariance": "Prediction agreement under colour jitter: does KD pass the teacher's on?",
    "Grad-CAM": "Per row one image: input, then teacher, KD and independent student maps.",
    "Training runs": "The recipes and final test accuracy of every trained model.",
}


def _hook(section: str, header: Sequence[str], row: Sequence[str], j: int) -> str | None:
    if not section.lower().startswith("adversarial") or header[j] not in ("KD", "independent"):
        return None
    kept = cell_value(row[header.index("kept (mean)")]) if "kept (mean)" in header else None
    return wilson_cell(row[j], None if kept is None else int(kept))


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
