"""advimage.eval.plots: the report scripts' shared figure and markdown helpers."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from advimage.eval.plots import (
    eps_label,
    label_axes,
    md_row,
    md_table,
    pyplot,
    save_png,
    subplots,
)


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_md_table_and_row() -> None:
    assert md_row(["a", 1, None, 0.5, ""]) == "| a | 1 | None | 0.5 |  |"
    assert md_table(["x", "y"], [[1, 2], ("p", "q")]) == [
        "| x | y |", "|---|---|", "| 1 | 2 |", "| p | q |"
    ]
    assert md_table(["only"]) == ["| only |", "|---|"]
    with pytest.raises(ValueError, match="header"):
        md_table([])


def test_eps_label() -> None:
    assert eps_label(8 / 255) == "8/255"
    assert eps_label(2 / 255) == "2/255"
    assert eps_label(0.1) == "0.1"
    assert eps_label(0.75 / 255) == "0.002941"  # not a whole multiple of 1/255
    assert eps_label(0.0) == "0"


def test_save_png_size_bbox_and_close(tmp_path) -> None:
    plt = pyplot()
    assert plt.get_backend().lower() == "agg"
    fig, ax = subplots(figsize=(2, 1))
    ax.plot([0, 1], [0, 1])
    path = save_png(fig, tmp_path / "a" / "b.png", dpi=50)
    assert path == tmp_path / "a" / "b.png"
    assert _png_size(path) == (100, 50)  # 2 x 1 inches at 50 dots per inch
    assert fig.number not in plt.get_fignums()  # closed
    # bbox "tight" crops to what is drawn (here a small text), so the PNG shrinks
    fig, _ = subplots(figsize=(4, 4))
    fig.text(0.5, 0.5, "x")
    tight = save_png(fig, tmp_path / "t.png", dpi=50, tight=False, bbox="tight")
    w, h = _png_size(tight)
    assert w < 200 and h < 200
    fig, _ = subplots()
    with pytest.raises(ValueError, match="dpi"):
        save_png(fig, tmp_path / "z.png", dpi=0)
    plt.close(fig)


def test_label_axes() -> None:
    plt = pyplot()
    fig, ax = subplots()
    ax.plot([0, 1], [1, 0], label="line")
    label_axes(ax, xlabel="eps", ylabel="acc", title="T", title_size=9, legend_size=7,
               grid=True)
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("eps", "acc", "T")
    assert ax.title.get_fontsize() == 9
    legend = ax.get_legend()
    assert legend is not None and legend.get_texts()[0].get_fontsize() == 7
    assert all(g.get_visible() for g in ax.get_xgridlines())
    plt.close(fig)
    fig, ax = subplots()
    label_axes(ax, ylabel="only")
    assert ax.get_legend() is None and ax.get_xlabel() == "" and ax.get_ylabel() == "only"
    assert not any(g.get_visible() for g in ax.get_xgridlines())
    plt.close(fig)
