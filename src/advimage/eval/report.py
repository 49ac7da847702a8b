"""Self-contained HTML reports: tables, matplotlib figures and image grids inlined as base64.

The page needs no network to view (no external CSS, JS or images), so a report can be mailed
or archived as one file. Capabilities add sections to the same page type.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from advimage.utils import atomic_write_text  # noqa: E402

__all__ = ["HtmlReport", "attack_grid_figure", "image_grid_figure", "figure_to_png"]

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
color:#222;line-height:1.45;padding:0 1em}
h1{border-bottom:2px solid #444}h2{margin-top:1.8em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:1em 0;font-size:0.92em}
th,td{border:1px solid #bbb;padding:4px 10px;text-align:right}th{background:#f0f0f0}
td:first-child,th:first-child{text-align:left}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em 1em}
.warn{background:#fdecea;border-left:4px solid #d93025;padding:.5em 1em}
figure{margin:1em 0}figcaption{font-size:.9em;color:#555}
img{max-width:100%}code{background:#f4f4f4;padding:1px 4px}
table.sortable{display:block;overflow-x:auto;max-width:100%}table.sortable td{white-space:nowrap}
.read{background:#eef4fb;border-left:4px solid #4a7fc1;padding:.5em 1em;font-size:.95em}
"""


def figure_to_png(fig: plt.Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _to_hwc(img: torch.Tensor) -> Any:
    img = img.detach().float().cpu().clamp(0, 1)
    if img.shape[0] == 1:
        return img[0].numpy()
    return img.permute(1, 2, 0).numpy()


def image_grid_figure(
    x: torch.Tensor,
    x_adv: torch.Tensor,
    pred_clean: Sequence[int],
    pred_adv: Sequence[int],
    classes: Sequence[str] | None = None,
    labels: Sequence[int] | None = None,
    amplify: float | None = None,
) -> plt.Figure:
    """Rows of (clean, adversarial, amplified perturbation) with both predictions.

    The perturbation is shown as ``0.5 + amplify * (x_adv - x)``; by default ``amplify`` scales
    the largest absolute perturbation of the grid to 0.5 so it fills the colour range.
    """
    n = len(x)
    delta = (x_adv - x).detach().float().cpu()
    if amplify is None:
        peak = float(delta.abs().max()) or 1.0
        amplify = 0.5 / peak
    name = (lambda k: classes[k]) if classes else (lambda k: str(k))
    fig, axes = plt.subplots(n, 3, figsize=(6.0, 2.0 * n), squeeze=False)
    cmap = "gray" if x.shape[1] == 1 else None
    for i in range(n):
        truth = f" (true {name(labels[i])})" if labels is not None else ""
        cells = [
            (x[i], f"clean: {name(pred_clean[i])}{truth}"),
            (x_adv[i], f"adversarial: {name(pred_adv[i])}"),
            (0.5 + amplify * delta[i], f"perturbation x{amplify:.0f}"),
        ]
        for j, (img, title) in enumerate(cells):
            ax = axes[i][j]
            ax.imshow(_to_hwc(img), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(
                title,
                fontsize=8,
                color="crimson" if j == 1 and pred_adv[i] != pred_clean[i] else "black",
            )
            ax.axis("off")
    fig.tight_layout()
    return fig


def attack_grid_figure(
    x: torch.Tensor,
    attacks: Mapping[str, tuple[torch.Tensor, Sequence[int]]],
    pred_clean: Sequence[int],
    classes: Sequence[str] | None = None,
    labels: Sequence[int] | None = None,
) -> plt.Figure:
    """One column per image, one row per attack: the clean images on top, then each attack's
    adversarial image of the same image below it, then its amplified perturbation.

    Args:
        x: clean images (N, C, H, W) in [0, 1].
        attacks: per row title, (adversarial images like ``x``, their predictions).
        pred_clean: the model's predictions on ``x``; titles of changed predictions are red.
        classes: class names (indices when ``None``); labels: true labels for the top row.
    """
    n, names = len(x), list(attacks)
    name = (lambda k: classes[k]) if classes else (lambda k: str(k))
    rows: list[tuple[str, torch.Tensor, list[str], list[bool]]] = [(
        "clean", x, [f"{name(p)}" + (f" (true {name(labels[i])})" if labels is not None else "")
                     for i, p in enumerate(pred_clean)], [False] * n)]
    for a in names:
        adv, pred = attacks[a]
        delta = (adv - x).detach().float().cpu()
        amp = 0.5 / (float(delta.abs().max()) or 1.0)
        rows.append((a, adv, [name(p) for p in pred],
                     [int(p) != int(c) for p, c in zip(pred, pred_clean, strict=True)]))
        rows.append((f"{a}: perturbation x{amp:.0f}", 0.5 + amp * delta, [""] * n, [False] * n))
    fig, axes = plt.subplots(len(rows), n, figsize=(1.25 * n + 0.6, 1.4 * len(rows)),
                             squeeze=False)
    cmap = "gray" if x.shape[1] == 1 else None
    for r, (title, imgs, texts, changed) in enumerate(rows):
        for i in range(n):
            ax = axes[r][i]
            ax.imshow(_to_hwc(imgs[i]), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(texts[i], fontsize=7, color="crimson" if changed[i] else "black")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(title, fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return fig


class HtmlReport:
    """Accumulates sections and writes one self-contained HTML file."""

    def __init__(self, title: str) -> None:
        self.title = title
        self._parts: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self._parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def text(self, text: str, css_class: str | None = None) -> None:
        cls = f' class="{css_class}"' if css_class else ""
        self._parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def warning(self, text: str) -> None:
        self.text(text, "warn")

    def how_to_read(self, text: str) -> None:
        """A short reading guide at the top of a section (escaped here)."""
        self._parts.append(f'<p class="read"><b>How to read this:</b> {html.escape(text)}</p>')

    def table(
        self,
        rows: Sequence[Mapping[str, Any]],
        columns: Sequence[str] | None = None,
        floatfmt: str = "{:.4g}",
    ) -> None:
        if not rows:
            self.text("(no rows)")
            return
        cols = list(columns or rows[0].keys())

        def fmt(v: Any) -> str:
            if isinstance(v, float):
                return html.escape(floatfmt.format(v))
            return html.escape("" if v is None else str(v))

        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = "".join(
            "<tr>" + "".join(f"<td>{fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows
        )
        self._parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def figure(self, fig: plt.Figure | bytes, caption: str = "") -> None:
        png = fig if isinstance(fig, bytes) else figure_to_png(fig)
        data = base64.b64encode(png).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self._parts.append(
            f'<figure><img alt="{html.escape(caption or "figure")}" '
            f'src="data:image/png;base64,{data}">{cap}</figure>'
        )

    def raw(self, fragment: str) -> None:
        """Append trusted HTML (callers escape their own text)."""
        self._parts.append(fragment)

    def render(self) -> str:
        body = "\n".join(self._parts)
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head>"
            f"<body><h1>{html.escape(self.title)}</h1>\n{body}\n</body></html>\n"
        )

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, self.render())
