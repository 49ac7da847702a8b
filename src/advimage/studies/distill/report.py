"""Markdown tables and bar charts of the transfer experiment (Ojha et al., NeurIPS 2023).

:func:`build_report` turns the ``transfer.json`` files of ``advimage eval transfer`` and the
training sidecars ``model.json`` into ``README.md`` (mean ± sample std over seeds), one bar chart
per probe and one Grad-CAM overlay grid per (teacher group, student arch): the committed
``reports/distill``. Every rate table states the images ``n`` its rates were measured on, so the
HTML page (:mod:`advimage.studies.distill.report_html`) can put a Wilson 95% interval beside each
single-seed rate; the charts' error bars are that interval for one seed and the sample std over
seeds otherwise. ``reports/distill/make_report.py`` is its command line.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from advimage.eval.plots import eps_label, label_axes, md_row, md_table, save_png, subplots
from advimage.studies.distill.report_data import (
    Key,
    Run,
    bar_error,
    gap,
    load_runs,
    n_cell,
    pct,
    result_field,
    row_at,
    seed_stats,
)

__all__ = ["PAPER_TABLE2", "build_report"]

# Ojha et al. (2023), Table 2, CIFAR-100: fooling rate (%) of the independent vs the KL (Hinton
# KD) student on the teacher's adversarial images, for the paper's three teacher/student pairs
PAPER_TABLE2 = [(31.2, 48.6), (42.4, 51.9), (36.6, 43.3)]
_RESULT_N = result_field("n")  # a transfer run's test images
_N_NOTE = ("n = the test images each rate was measured on (per seed); the error bars are the "
           "Wilson 95% interval over n for one seed, the sample std over several.")
Series = dict[str, list[list[float | None]]]  # bar series -> per category -> per-seed values
Counts = dict[str, list[list[int | None]]]  # bar series -> per category -> per-seed images n


def build_report(runs_dir: Path, out: Path, *, train_runs: Sequence[Path] | None = None,
                 preface: Path | None = None) -> Path:
    """Write ``out/README.md``, the probes' bar charts and the Grad-CAM overlays.

    Args:
        runs_dir: folder holding ``transfer.json`` files (searched recursively).
        out: the report folder (created if needed).
        train_runs: folders holding training ``model.json`` sidecars (default: ``runs_dir``).
        preface: markdown inserted after the title (setup, deviations, findings).

    Returns:
        The path of the written ``README.md``.

    Raises:
        ValueError: no ``transfer.json`` under ``runs_dir``.
    """
    runs = load_runs(runs_dir)
    if not runs:
        raise ValueError(f"no transfer.json under {runs_dir}")
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# What knowledge gets distilled: transfer probes", "",
             "Ojha et al. (NeurIPS 2023), reproduced on CIFAR-10 with `advimage eval transfer`. "
             "Numbers are mean ± sample std over seeds (in %).", ""]
    if preface is not None:
        lines += [preface.read_text(encoding="utf-8").strip(), ""]
    lines += ["Runs: " + "; ".join(f"{g} / {arch}: seeds {', '.join(s for s, _, _ in it)}"
                                   for (g, arch), it in runs.items()), ""]
    lines += _fooling(runs, out)
    lines += _probe_sections(runs, out)
    lines += _overlays(runs, out)
    lines += _training(list(train_runs or [runs_dir]))
    readme = out / "README.md"
    readme.write_text("\n".join(lines), encoding="utf-8")
    return readme


def _bars(path: Path, cats: list[str], series: Series, counts: Counts, title: str, ylabel: str,
          hline: float | None = None) -> None:
    """Grouped bars in percent: the mean over seeds; error bar = the Wilson 95% interval over
    the ``counts`` images for one seed, the sample std over several (:func:`bar_error`)."""
    bars = len(cats) * max(1, len(series))
    fig, ax = subplots(figsize=(min(14.0, max(5.0, 0.3 * bars)), 3.6))  # inches; 0.3 per bar
    width = 0.8 / max(1, len(series))
    for j, (name, per_cat) in enumerate(series.items()):
        stats = [seed_stats(v) for v in per_cat]
        err = [bar_error(v, n) for v, n in zip(per_cat, counts[name], strict=True)]
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(cats))]
        ax.bar(xs, [100 * s[0] for s in stats], width, label=name, capsize=3,
               yerr=[[100 * e[0] for e in err], [100 * e[1] for e in err]])
    if hline is not None:
        ax.axhline(100 * hline, color="gray", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(cats)))
    ax.set_xticklabels(cats, fontsize=7)
    label_axes(ax, ylabel=ylabel, title=title, title_size=9, legend_size=7)
    save_png(fig, path, dpi=90)


def _fooling_values(items: list[Run], eps: float) -> tuple[dict[str, list[float | None]],
                                                            dict[str, list[int | None]]]:
    """Per-seed fooling rates at ``eps`` (KD, independent and both controls) and the kept
    images each was measured on."""
    rows = [row_at(d["results"]["fooling_rate"], eps) for _, _, d in items]
    ctrl = [row_at(d["results"].get("control"), eps) for _, _, d in items]
    vals = {
        "KD": [r["rates"]["kd"] if r else None for r in rows],
        "independent": [r["rates"]["independent"] if r else None for r in rows],
        "control KD": [c["rates"]["kd"] if c else None for c in ctrl],
        "control independent": [c["rates"]["independent"] if c else None for c in ctrl],
    }
    kept = [r["kept"] if r else None for r in rows]
    kept_ctrl = [c["kept"] if c else None for c in ctrl]
    return vals, {k: kept if k in ("KD", "independent") else kept_ctrl for k in vals}


def _fooling(runs: dict[Key, list[Run]], out: Path) -> list[str]:
    """The fooling-rate section: one row per (teacher, student, eps), paired gaps, chart."""
    lines = ["## Adversarial vulnerability (fooling rate, %)", "",
             "I-FGSM on the teacher; only images that fool the teacher are kept; rate = share of "
             "kept images whose student prediction changes. Control: the same on images crafted "
             "on a foreign network of the student's architecture (no gap expected).", "",
             "Gaps are paired per seed (KD minus independent, percentage points). The chart's "
             "error bars are the Wilson 95% interval over the kept images for one seed, the "
             "sample std over seeds otherwise.", "",
             *md_table(["teacher", "student", "eps", "seeds", "kept (mean)", "KD", "independent",
                        "control KD", "control independent", "gap", "control gap"])]
    cats: list[str] = []
    series: Series = {k: [] for k in ("KD", "independent", "control KD", "control independent")}
    counts: Counts = {k: [] for k in series}
    for (group, arch), items in runs.items():
        for eps in items[0][2]["results"]["eps"]:
            vals, ns = _fooling_values(items, eps)
            gaps = [gap(vals["KD"], vals["independent"]),
                    gap(vals["control KD"], vals["control independent"])]
            kept_rows = [row_at(d["results"]["fooling_rate"], eps) for _, _, d in items]
            kept = statistics.fmean(r["kept"] for r in kept_rows if r)
            lines.append(md_row([group, arch, eps_label(eps), len(items), f"{kept:.0f}",
                                 *(pct(v) for v in [*vals.values(), *gaps])]))
            cats.append(f"{group}\n{arch}\n{eps_label(eps)}")
            for k, v in vals.items():
                series[k].append(v)
                counts[k].append(ns[k])
    lines += ["", "Ojha et al. (2023), Table 2 (CIFAR-100, three teacher/student pairs), fooling "
              "rate independent vs KL: " + "; ".join(f"{a} vs {b}" for a, b in PAPER_TABLE2)
              + " (gap " + ", ".join(f"+{b - a:.1f}" for a, b in PAPER_TABLE2) + " points).", ""]
    if cats:
        _bars(out / "fooling_rate.png", cats, series, counts, "Fooling rate on teacher / foreign "
              "adversarial images", "fooling rate (%)")
        lines += ["![fooling rate](fooling_rate.png)", ""]
    return lines


def _simple(runs: dict[Key, list[Run]], out: Path, title: str, note: str,
            fields: dict[str, Callable[[dict[str, Any]], float | None]], png: str,
            hline: float | None = None,
            n_of: Callable[[dict[str, Any]], Any] = _RESULT_N) -> list[str]:
    """One row per (teacher, student arch); ``fields``: column -> doc -> value or None;
    ``n_of``: doc -> the images its rates were measured on (the ``n`` column)."""
    lines = [f"## {title}", "", f"{note} {_N_NOTE}", "",
             *md_table(["teacher", "student", "seeds", "n", *fields])]
    cats: list[str] = []
    series: Series = {k: [] for k in fields}
    counts: Counts = {k: [] for k in fields}
    for (group, arch), items in runs.items():
        vals = {k: [f(d) for _, _, d in items] for k, f in fields.items()}
        if all(v is None for col in vals.values() for v in col):
            continue
        ns = [n_of(d) for _, _, d in items]
        lines.append(md_row([group, arch, len(items), n_cell(ns),
                             *(pct(v) for v in vals.values())]))
        cats.append(f"{group}\n{arch}")
        for k, v in vals.items():
            series[k].append(v)
            counts[k].append(ns)
    if cats:
        _bars(out / png, cats, series, counts, title, "%", hline)
        lines += ["", f"![{title}]({png})"]
    return [*lines, ""]


def _probe_sections(runs: dict[Key, list[Run]], out: Path) -> list[str]:
    """Agreement, Grad-CAM localization and colour-jitter invariance sections."""
    get = result_field
    lines = _simple(runs, out, "Agreement with the teacher (top-1, clean images)",
                    "Clean accuracy beside.", {
                        "KD": get("agreement", "kd"),
                        "independent": get("agreement", "independent"),
                        "teacher acc.": get("accuracy", "teacher"),
                        "KD acc.": get("accuracy", "kd"),
                        "independent acc.": get("accuracy", "independent")},
                    "agreement.png")
    lines += _simple(runs, out, "Localization (Grad-CAM of the true class)",
                     "Share of images whose teacher map is more cosine-similar to the KD "
                     "student's than to the independent student's (chance 50%).",
                     {"closer to KD": get("gradcam", "share_closer_to_kd")},
                     "gradcam_share.png", hline=0.5, n_of=get("gradcam", "n"))
    lines += _simple(runs, out, "Invariance to colour jitter",
                     "Share of images whose prediction is unchanged by colour jitter "
                     "(brightness/contrast/saturation 0.4, fixed seed).", {
                         "teacher": get("invariance", "rates", "teacher"),
                         "KD": get("invariance", "rates", "kd"),
                         "independent": get("invariance", "rates", "independent")},
                     "invariance.png")
    return lines


def _overlays(runs: dict[Key, list[Run]], out: Path) -> list[str]:
    """Copy the first seed's ``gradcam.png`` of each group into ``out``; their section."""
    overlays = []
    for (group, arch), items in runs.items():
        seed, folder, _ = items[0]
        if (folder / "gradcam.png").exists():
            name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"overlay-{group}-{arch}-s{seed}.png")
            shutil.copyfile(folder / "gradcam.png", out / name)
            overlays.append(f"![{group} {arch} seed {seed}]({name})")
    if not overlays:
        return []
    return ["## Grad-CAM overlays (input, teacher, KD, independent)", "", *overlays, ""]


def _training(dirs: list[Path]) -> list[str]:
    """One row per training sidecar ``model.json`` under ``dirs``: recipe, accuracy, time."""
    lines = ["## Training runs (recipes, accuracy, wall-clock)", "",
             "test images = the test images the final accuracy was measured on, from the "
             "recorded training config (test_limit; all = the whole test split).", "",
             *md_table(["run", "arch", "arm", "seed", "dataset", "augment", "epochs", "batch", "lr",
                        "train limit", "tau/alpha", "test images", "test accuracy (%)",
                        "seconds"])]
    seen: set[Path] = set()
    for root in dirs:
        for path in sorted(root.rglob("model.json")):
            side = json.loads(path.read_text())
            cfg = side.get("train_config")
            if not cfg or path.resolve() in seen:
                continue
            seen.add(path.resolve())
            dist = side.get("distill") or {}
            secs = sum(float(h.get("seconds", 0.0)) for h in side.get("history") or [])
            kd = f"{dist.get('tau')}/{dist.get('alpha')}" if dist.get("arm") == "kd" else ""
            acc = side.get("accuracy")
            lines.append(md_row([
                path.parent.relative_to(root), side.get("arch"), dist.get("arm", "teacher"),
                side.get("seed"), cfg.get("dataset", ""), cfg.get("augment"), cfg.get("epochs"),
                cfg.get("batch_size"), cfg.get("lr"), cfg.get("train_limit") or "all", kd,
                cfg.get("test_limit") or "all", "n/a" if acc is None else f"{100 * acc:.1f}",
                f"{secs:.1f}"]))
    return [*lines, ""]
