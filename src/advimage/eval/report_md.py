"""A study's markdown report as one self-contained HTML page (the study reports' ``--html``).

The study reports (detection, cache, distill, NIM under :mod:`advimage.studies`) write markdown
for the repository; :func:`markdown_page` turns that same text into an
:class:`~advimage.eval.report.HtmlReport`: headings, paragraphs, lists, every table sortable
(:func:`~advimage.eval.compare_html.sortable_table`, cells sort by their leading number or
``k/255`` budget), every local PNG inlined, a "how to read this" under the headings a study
names, and a per-cell hook through which a study puts Wilson 95% intervals beside its rates.
Only the subset of markdown the study reports write is understood.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from advimage.eval.compare_html import SORT_SCRIPT, Cell, sortable_table
from advimage.eval.report import HtmlReport
from advimage.formatting import format_rate

__all__ = ["CellHook", "cell_value", "inline", "markdown_page", "split_row", "wilson_cell"]

CellHook = Callable[[str, Sequence[str], Sequence[str], int], str | None]
"""``(section heading, header, row, column) -> new cell text`` (``None`` keeps the cell)."""

_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+)\)\s*$")
_NUMBER = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?(?:e[+-]?\d+)?)(\s*/\s*255)?", re.I)


def cell_value(text: str) -> float | None:
    """The sort value of a cell: its leading number (``k/255`` as ``k / 255``), else None."""
    m = _NUMBER.match(text.replace(",", ""))
    if m is None:
        return None
    v = float(m.group(1))
    return v / 255 if m.group(2) else v


def wilson_cell(text: str, n: int | None, percent: bool = True) -> str | None:
    """A rate cell with its Wilson 95% interval over ``n`` items (``35.0% [18.1, 56.7]``);
    ``None`` (keep the cell) when it holds no plain number, a spread (``±``) or ``n`` is unknown.
    ``percent``: the number is in percent (a trailing ``%`` is always read as percent)."""
    v = cell_value(text)
    if v is None or not n or "±" in text or "/255" in text:
        return None
    rate = v / 100 if percent or text.strip().endswith("%") else v
    return format_rate(rate, n) if 0.0 <= rate <= 1.0 else None


def inline(text: str) -> str:
    """Escape ``text`` and render ``**bold**``, ``*italic*``, ```code``` and ``[text](url)``
    (links keep their text only: a page that travels alone has no neighbours to link to)."""
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)
    out = re.sub(r"(?<![*\w])\*([^*\s][^*]*)\*(?![*\w])", r"<i>\1</i>", out)
    return re.sub(r"\[([^\]]+)\]\([^)\s]+\)", r"\1", out)


def split_row(line: str) -> list[str]:
    """The cells of a markdown table row ``| a | b |``."""
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(lines: Sequence[str], hook: CellHook | None, section: str) -> str:
    header = split_row(lines[0])
    rows: list[list[Cell]] = []
    for line in lines[2:]:
        cells = split_row(line)
        texts = [(hook(section, header, cells, j) if hook else None) or c
                 for j, c in enumerate(cells)]
        rows.append([(t, cell_value(c)) for t, c in zip(texts, cells, strict=True)])
    return sortable_table(header, rows)


def _image(report: HtmlReport, alt: str, src: str, folder: Path) -> None:
    path = folder / src
    if Path(src).is_absolute() or "://" in src or not path.is_file():
        report.text(f"(figure {src} not found next to the report)", "note")
        return
    report.figure(path.read_bytes(), alt)


def _blocks(markdown: str) -> list[tuple[str, list[str]]]:
    """Split into (kind, lines) blocks: heading, table, image, list, para."""
    blocks: list[tuple[str, list[str]]] = []
    for line in markdown.splitlines():
        s = line.rstrip()
        kind = ("" if not s.strip() else "heading" if s.startswith("#")
                else "table" if s.lstrip().startswith("|") else "image" if _IMAGE.match(s)
                else "list" if s.lstrip().startswith(("- ", "* ")) else "para")
        if kind in ("table", "list", "para") and blocks and blocks[-1][0] == kind:
            blocks[-1][1].append(s)
        elif kind == "para" and blocks and blocks[-1][0] == "list" and s.startswith(" "):
            blocks[-1][1][-1] += " " + s.strip()  # a list item's continuation line
        elif kind:
            blocks.append((kind, [s]))
        else:
            blocks.append(("", []))
    return [b for b in blocks if b[0]]


def markdown_page(markdown: str, folder: Path, *, title: str | None = None,
                  notes: Mapping[str, str] | None = None,
                  hook: CellHook | None = None) -> HtmlReport:
    """The HTML page of a study's markdown report.

    Args:
        markdown: the report text (as written to README.md or printed).
        folder: where its relative image paths point (the report folder).
        title: page title (default: the first ``#`` heading, which is then not repeated).
        notes: ``{heading prefix: guide}``: a "how to read this" under each heading that starts
            with the prefix (case-insensitive; the first matching prefix wins).
        hook: rewrites table cells (e.g. a rate with its Wilson interval); sorting keeps the
            original cell's number.
    """
    blocks = _blocks(markdown)
    if title is None and blocks and blocks[0][0] == "heading" and blocks[0][1][0][:2] == "# ":
        title = blocks.pop(0)[1][0][2:].strip()
    report = HtmlReport(title or "advimage report")
    guides = {k.lower(): v for k, v in (notes or {}).items()}
    section = ""
    for kind, lines in blocks:
        if kind == "heading":
            level = len(lines[0]) - len(lines[0].lstrip("#"))
            text = section = lines[0][level:].strip()
            report.heading(text, min(6, level + 1))
            guide = next((g for k, g in guides.items() if text.lower().startswith(k)), None)
            if guide:
                report.how_to_read(guide)
        elif kind == "table" and len(lines) >= 2:
            report.raw(_table(lines, hook, section))
        elif kind == "image":
            m = _IMAGE.match(lines[0])
            if m is not None:
                _image(report, m.group(1), m.group(2), folder)
        elif kind == "list":
            items = "".join(f"<li>{inline(x.lstrip()[2:])}</li>" for x in lines)
            report.raw(f"<ul>{items}</ul>")
        else:
            report.raw(f"<p>{inline(' '.join(x.strip() for x in lines))}</p>")
    report.raw(SORT_SCRIPT)
    return report

