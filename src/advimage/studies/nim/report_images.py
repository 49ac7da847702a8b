"""Figures of the De^3 robustness report (You et al., NeurIPS 2023, "Beyond Pretrained Features:
Noisy Image Modeling Provides Adversarial Defense"): image rows and the trade-off plot.

The image rows show what the defense does to the run's stored example images: the input, the
noised input and the NIM/MIM reconstruction, for the clean and the adversarial image, with the
defense's own noise draw (:func:`image_stack`, through :meth:`De3Defense.purify`). The trade-off
plot draws clean and robust accuracy against sigma_test, the paper's tunable knob, with Wilson
95% error bars over the run's test images (the references' intervals shaded). matplotlib is
imported on first use through :mod:`advimage.eval.plots`; PNGs are byte-identical on rebuild.
A seeded draw is the evaluation's exact noise only for runs made under the current noise scheme
(commit NOISE_SCHEME, :func:`exact_noise`); older ones get a stand-in.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from advimage.defend.nim.defense import De3Defense
from advimage.defend.nim.io import load_nim
from advimage.eval.plots import label_axes, save_png, subplots
from advimage.formatting import rate_interval
from advimage.studies.nim.report_run import Attack, Defense, Run, series

__all__ = ["CELL_IN", "IMG_DPI", "NOISE_SCHEME", "REPORT_NOISE_SEED", "Curve", "exact_noise",
           "image_defaults", "image_rows", "image_stack", "run_n", "tradeoff_plot"]

# commit since which a noise_seed is one CPU (C, H, W) draw shared by every image (before: one
# per batch shape), so the report redraws exactly the evaluation's noise only for later runs
NOISE_SCHEME = "0a5754b"
REPORT_NOISE_SEED = 0  # generator seed of the image rows' draw when the defense has no noise_seed
CELL_IN = 1.25  # inches per image cell of images-<defense>.png
IMG_DPI = 100  # dots per inch of images-<defense>.png: CELL_IN * IMG_DPI = 125 px per cell
PLOT_DPI = 90  # dots per inch of tradeoff.png
# one line of the trade-off plot: panel ("clean"/"robust"), legend name, colour index C<i>,
# {sigma_test: accuracy (fraction) or None}
Curve = tuple[str, str, int, dict[float, float | None]]


def _classes(run: Run) -> list[str] | None:
    model = Path(str(run.config.get("model", {}).get("path", "")))
    side = model.with_suffix(".json")
    if model.name and side.exists():
        return json.loads(side.read_text(encoding="utf-8")).get("classes")
    return None


def exact_noise(run: Run) -> bool:
    """True when run.json's git_hash is a commit descending from NOISE_SCHEME.

    A "-dirty" suffix (uncommitted edits) is judged by its commit; an unknown or missing hash, or
    no git to ask, gives False (stand-in).
    """
    try:
        h = json.loads((run.path / "run.json").read_text(encoding="utf-8")).get("git_hash")
    except (OSError, ValueError, AttributeError):
        return False
    m = re.fullmatch(r"([0-9a-f]{7,40})(-dirty)?", h) if isinstance(h, str) else None
    if m is None:
        return False
    h = m.group(1)
    try:  # asked in the repository holding this module (exit 0: ancestor, 1: not, 128: unknown)
        done = subprocess.run(["git", "merge-base", "--is-ancestor", NOISE_SCHEME, h],
                              cwd=Path(__file__).resolve().parent, capture_output=True,
                              timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def image_defaults(run: Run) -> list[Defense]:
    """One NIM and one MIM defense (noise unknown), each at the middle sigma_test present."""
    picks = []
    for g in ("NIM", "MIM"):
        pts = list(series(run).get(g, {}).values())
        if pts:
            picks.append(pts[len(pts) // 2])
    return picks


def image_stack(d: Defense, x: torch.Tensor, x_adv: torch.Tensor) -> list[torch.Tensor]:
    """Input, noised input (clamped for display), reconstruction, for ``x`` then ``x_adv``.

    The noise is the defense's own draw when it has a ``noise_seed`` (one (C, H, W) draw made on
    the CPU and shared by every image: exactly what the evaluation used, on any device), else the
    draw of seed REPORT_NOISE_SEED standing in for the evaluation's fresh ones; the same draw for
    both images. Reconstruction through :meth:`De3Defense.purify` (noise,
    ``reconstruct(noised, reference)``, clamp).

    Args:
        d: a De^3 defense of the run (``d.mode`` set).
        x: clean example images, (N, C, H, W) in [0, 1].
        x_adv: their adversarial versions, same shape.

    Returns:
        Six (N, C, H, W) tensors: input, noised, reconstruction; then the same for ``x_adv``.
    """
    if d.path is None or d.sigma is None:
        raise ValueError(f"defense {d.label!r} is not a De^3 defense")
    nim = load_nim(d.path)
    seed = REPORT_NOISE_SEED if d.seed is None else d.seed
    defense = De3Defense(nim, nn.Identity(), sigma_test=d.sigma, noise_seed=seed)
    noise = defense.draw_noise(x)  # (N, C, H, W): the seed's one draw, shared by every image
    rows = []
    with torch.no_grad():
        for img in (x, x_adv):
            rows += [img, nim.add_noise(img, d.sigma, noise).clamp(0, 1), defense.purify(img)]
    return rows


def image_rows(run: Run, d: Defense, att: Attack, n_max: int, out: Path) -> list[str]:
    """Write images-<label>.png (6 rows: input, noised, reconstruction; clean and adversarial,
    x up to ``n_max`` stored examples) into ``out``; returns the README lines about it."""
    ex_path = run.path / "examples" / f"{d.label}.safetensors"
    if not ex_path.exists():
        return [f"No example images stored for {d.label} ({ex_path.name} missing).", ""]
    ex = load_file(str(ex_path))
    adv_key = f"adv/{att.key}"
    if adv_key not in ex:
        return [f"No {att.title} examples stored for {d.label}.", ""]
    n = min(n_max, ex["x"].shape[0])
    x, x_adv = ex["x"][:n].float(), ex[adv_key][:n].float()  # (N, C, H, W) each
    rows = image_stack(d, x, x_adv)
    names = ["input", f"noised (sigma {d.sigma:g})", "reconstruction",
             f"adversarial ({att.title})", "adv. noised", "adv. reconstruction"]
    classes = _classes(run)

    def cls(i: int) -> str:
        return classes[i] if classes and 0 <= i < len(classes) else str(i)

    fig, axes = subplots(6, n, figsize=(CELL_IN * n, CELL_IN * 6), squeeze=False)
    for j in range(n):
        for i, img in enumerate(rows):
            ax = axes[i][j]
            ax.imshow(img[j].permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")  # (H, W, C), or (H, W) for gray
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(names[i], fontsize=6)
        axes[0][j].set_title(f"{cls(int(ex['y'][j]))}\npred {cls(int(ex['pred_clean'][j]))}",
                             fontsize=6)
        axes[3][j].set_title(f"pred {cls(int(ex[f'pred/{att.key}'][j]))}", fontsize=6)
    mode = (d.mode or "?").upper()
    fig.suptitle(f"{d.label}: {mode} autoencoder, sigma_test {d.sigma:g}", fontsize=7)
    name = f"images-{d.label}.png"
    save_png(fig, out / name, dpi=IMG_DPI)
    if d.sigma == 0:
        src = "none (sigma_test 0)"
    elif d.seed is None:
        src = f"a fixed draw (seed {REPORT_NOISE_SEED}) standing in for the evaluation's fresh ones"
    else:
        src = (f"the defense's own seeded draw (noise_seed {d.seed}: one fixed (C, H, W) pattern "
               "shared by all images), ")
        src += ("the evaluation's exact noise" if exact_noise(run) else
                "a stand-in for the evaluation's draw (run.json's git_hash does not "
                f"descend from {NOISE_SCHEME}, the current noise scheme)")
    same = "" if d.sigma == 0 else ", the same draw for the clean and the adversarial image"
    return [f"![{d.label}]({name})", "",
            f"{d.label}: the first {n} stored example image(s); noise: {src}{same}; "
            "reconstructions through the "
            "library's De3Defense.purify (clamped to [0, 1]), noised inputs clamped for display. "
            "Predictions are the evaluation's.", ""]


def run_n(run: Run) -> int | None:
    """The test images of a harness run (its rows' largest ``n``; None without rows)."""
    return max((int(r["n"]) for r in run.rows if r.get("n")), default=None)


def _yerr(ys: tuple[float, ...], n: int | None) -> list[list[float]]:
    """Lower and upper Wilson 95% distances (points) of accuracies ``ys`` in % over n images."""
    cis = [rate_interval(y / 100, n) if n else (y / 100, y / 100) for y in ys]
    return [[max(0.0, y - 100 * c[0]) for y, c in zip(ys, cis, strict=True)],
            [max(0.0, 100 * c[1] - y) for y, c in zip(ys, cis, strict=True)]]


def tradeoff_plot(curves: list[Curve], refs: list[tuple[str, Run]], att: Attack,
                  worst: Attack | None, path: Path, n: int | None = None) -> None:
    """Write the trade-off PNG: clean and robust accuracy (%) against sigma_test, each point
    with its Wilson 95% error bar over ``n`` images (none when ``n`` is None), each reference
    line with its interval shaded.

    Args:
        curves: the De^3 lines; EOT lines (name containing "EOT") are dotted with squares,
            worst-case lines (name ending in "worst case") dash-dotted with triangles.
        refs: undefended references ``(name, run)``, dashed at their ``none`` accuracy
            (and dash-dotted at their worst case).
        att: the robust panel's attack.
        worst: the worst case at ``att``'s budget (None: not drawn for the references).
        path: the PNG to write.
        n: the test images every curve point was measured on.
    """
    fig, axes = subplots(1, 2, figsize=(10.0, 3.8), sharey=True)  # inches
    for ax, panel in zip(axes, ("clean", "robust"), strict=True):
        for p, name, colour, pts in curves:
            xy = [(s, 100 * v) for s, v in pts.items() if v is not None and p == panel]
            if xy:
                style = ("^", "-.") if name.endswith("worst case") else \
                    ("s", ":") if "EOT" in name else ("o", "-")  # (marker, line style)
                xs, ys = zip(*xy, strict=True)
                ax.errorbar(xs, ys, yerr=_yerr(ys, n), marker=style[0], color=f"C{colour}",
                            linestyle=style[1], label=name, capsize=2, elinewidth=0.8)
        ax.set_ylim(-2, 102)
        for i, (ref, r) in enumerate(refs):
            n_ref = run_n(r)
            hlines = [("--", ref,
                       r.clean("none") if panel == "clean" else r.robust("none", att.key))]
            if panel == "robust" and worst is not None:
                hlines.append(("-.", f"{ref}, worst case", r.robust("none", worst.key)))
            for ls, lab, v in hlines:
                if v is not None:
                    ax.axhline(100 * v, linestyle=ls, linewidth=1, color=f"C{7 + i % 3}", label=lab)
                    if n_ref:
                        lo, hi = rate_interval(v, n_ref)
                        ax.axhspan(100 * lo, 100 * hi, color=f"C{7 + i % 3}", alpha=0.12, lw=0)
        title = "clean accuracy" if panel == "clean" else f"robust accuracy, {att.title}" + (
            f" (dash-dot: {worst.title})" if worst is not None else "")
        label_axes(ax, xlabel="sigma_test (0-255 scale)", ylabel="accuracy (%)", title=title,
                   title_size=9, legend_size=7 if panel == "clean" else None, grid=True)
    # the robust panel has up to four lines per group: its legend goes right of the plot
    axes[1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    save_png(fig, path, dpi=PLOT_DPI, bbox="tight")
