"""The NIM / De^3 report (You et al., NeurIPS 2023, "Beyond Pretrained Features: Noisy Image
Modeling Provides Adversarial Defense") as one self-contained HTML page: the markdown that
:func:`advimage.studies.nim.report.write_report` wrote, with sortable tables, the figures
inlined, Wilson 95% intervals beside the accuracies (the run's over its ``n`` test images, the
training table's test accuracies over their recorded test images) and a "how to read this" per
section (:func:`advimage.eval.report_md.markdown_page`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from advimage.eval.report_md import cell_value, markdown_page, wilson_cell

__all__ = ["NOTES", "write_html"]

NOTES = {
    "Accuracy per defense": (
        "Accuracy in % of the n test images per defense (rows) and attack at each L-inf budget "
        "(columns), with its Wilson 95% interval in brackets; overlapping intervals may not "
        "differ. 'worst case' counts an image only if it survived every attack of that budget; "
        "'unbounded-pgd (check)' should be near 0, else gradients are masked. Click a title to "
        "sort."),
    "Defenses": "How each defense row was built: pipeline, test-time noise level and models.",
    "Trade-off": (
        "Clean and robust accuracy (%, Wilson 95% intervals) against the test-time noise level "
        "sigma_test: more noise buys robustness with clean accuracy."),
    "Claims": (
        "The paper's comparisons at this scale, in % with Wilson 95% intervals; differences are "
        "in points, without an interval: read them against the intervals of their two sides."),
    "Example images": (
        "Clean images, the attack's adversarial images, the noised input and the reconstruction "
        "the classifier sees, per defense."),
    "Training runs": (
        "Wall-clock time and final figures of the pretraining and classifier runs; a "
        "classifier's clean test accuracy carries its Wilson 95% interval over the test images "
        "it was measured on."),
}
_RATE_SECTIONS = ("accuracy per defense", "trade-off", "claims")
_NOT_RATES = ("n", "sigma_test", "eps", "steps", "restarts", "eot")
_TEST_ACC = "test acc. "  # the training table's classifier accuracy: "test acc. 70.3%"


def _training_cell(header: Sequence[str], row: Sequence[str], j: int) -> str | None:
    """``test acc. 70.3% [68.3, 72.3]`` over the row's test images (None: keep the cell)."""
    if header[j] != "final" or "test images" not in header or not row[j].startswith(_TEST_ACC):
        return None
    n = cell_value(row[header.index("test images")])
    cell = wilson_cell(row[j][len(_TEST_ACC):], None if n is None else int(n))
    return None if cell is None else _TEST_ACC + cell


def _hook() -> object:
    """A cell hook that learns n from the main table's ``n`` column."""
    seen: dict[str, int] = {}

    def hook(section: str, header: Sequence[str], row: Sequence[str], j: int) -> str | None:
        if section.lower().startswith("training runs"):
            return _training_cell(header, row, j)
        if not section.lower().startswith(_RATE_SECTIONS) or j == 0:
            return None
        if "n" in header:
            seen["n"] = int(row[header.index("n")])
        h = header[j].lower()
        if h in _NOT_RATES or " - " in h or "diff" in h:
            return None
        return wilson_cell(row[j], seen.get("n"))

    return hook


def write_html(out: str | Path, name: str = "report.html") -> Path:
    """Write ``out/name`` from ``out/README.md`` (figures next to it are inlined).

    Raises:
        ValueError: no README.md in ``out`` (run the markdown report first).
    """
    out = Path(out)
    readme = out / "README.md"
    if not readme.is_file():
        raise ValueError(f"{readme} missing: write the NIM report first")
    page = markdown_page(readme.read_text(encoding="utf-8"), out, notes=NOTES,
                         hook=_hook())  # type: ignore[arg-type]
    return page.save(out / name)
