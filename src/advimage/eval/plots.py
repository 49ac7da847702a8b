"""Figure and markdown helpers shared by the report scripts (``reports/*/make_report.py``).

Every report repeated the same steps: select matplotlib's headless Agg backend before pyplot,
open a figure, label the axes, ``tight_layout``, ``savefig`` at a fixed dpi, close the figure
(or leak it), and write markdown tables as ``| a | b |`` rows under a ``|---|---|`` rule. One
copy here keeps the PNGs reproducible (same dpi and bbox for the same call, byte-identical on
rerun with the same matplotlib) and the tables consistent. Library figures (e.g. the Grad-CAM
overlay of :mod:`advimage.studies.distill.gradcam`) save through the same :func:`save_png`.

matplotlib is imported on first use, so importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "pyplot",
    "subplots",
    "label_axes",
    "save_png",
    "md_row",
    "md_table",
    "eps_label",
]


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def subplots(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """``plt.subplots(*args, **kwargs)`` on the Agg backend; returns ``(figure, axes)``."""
    return pyplot().subplots(*args, **kwargs)


def label_axes(
    ax: Any,
    *,
    xlabel: str | None = None,
    ylabel: str | None = None,
    title: str | None = None,
    title_size: float | None = None,
    legend_size: float | None = None,
    grid: bool = False,
) -> None:
    """Axis labels, title, legend and light grid in one call; ``None`` leaves a part unset.

    Args:
        ax: a matplotlib ``Axes``.
        title_size: title font size in points (``None``: matplotlib's default).
        legend_size: legend font size in points; ``None`` draws no legend.
        grid: light grid (alpha 0.3) behind the data.
    """
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title, **({} if title_size is None else {"fontsize": title_size}))
    if legend_size is not None and ax.get_legend_handles_labels()[0]:  # a labelled artist
        ax.legend(fontsize=legend_size)
    if grid:
        ax.grid(alpha=0.3)


def save_png(
    fig: Any,
    path: str | Path,
    dpi: int,
    *,
    tight: bool = True,
    bbox: str | None = None,
) -> Path:
    """Write ``fig`` as a PNG at ``dpi`` (dots per inch) and close it; returns the path.

    Args:
        fig: a matplotlib ``Figure``.
        path: output file; missing parent folders are created.
        dpi: resolution in dots per inch (the reports use 70-110 so PNGs stay small).
        tight: run ``fig.tight_layout()`` first (off when the figure builder already did).
        bbox: ``savefig``'s ``bbox_inches`` (``"tight"`` crops to the drawn area; ``None``
            keeps the figure size).

    Raises:
        ValueError: if ``dpi`` is not positive.
    """
    if dpi <= 0:
        raise ValueError(f"dpi must be > 0, got {dpi}")
    from advimage.utils import atomic_writer  # here: importing this module stays cheap

    path = Path(path)
    try:
        if tight:
            fig.tight_layout()
        with atomic_writer(path, binary=True) as fh:  # the old file stays until this one is done
            fig.savefig(fh, format=path.suffix.lstrip(".").lower() or "png", dpi=dpi,
                        bbox_inches=bbox)
    finally:
        pyplot().close(fig)
    return path


def md_row(cells: Iterable[object]) -> str:
    """One markdown table row: ``| a | b |`` (cells through ``str``, nothing escaped)."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def md_table(header: Sequence[object], rows: Iterable[Iterable[object]] = ()) -> list[str]:
    """Markdown table lines: header row, ``|---|`` rule, then one :func:`md_row` per row.

    Rows are not checked against the header's width (a report may append literal rows later).

    Raises:
        ValueError: if ``header`` is empty.
    """
    if len(header) == 0:
        raise ValueError("md_table needs at least one header cell")
    return [md_row(header), "|" + "---|" * len(header), *(md_row(r) for r in rows)]


def eps_label(eps: float) -> str:
    """Budget label: ``8/255`` for positive multiples of 1/255 (CIFAR budgets), else ``0.1``
    (:func:`advimage.formatting.format_eps`, the one formatter of every report)."""
    from advimage.formatting import format_eps

    return format_eps(eps)
