"""Markdown tables and bar charts of the transfer experiment (Ojha et al., NeurIPS 2023).

Usage: python reports/distill/make_report.py RUNS_DIR -o reports/distill [--train-runs DIR ...]

Reads every ``transfer.json`` under RUNS_DIR (one per teacher, student architecture and seed, from
``advimage eval transfer``) and every training sidecar ``model.json`` under the ``--train-runs``
folders (default: RUNS_DIR). The teacher group is the run's ``--tag`` if set, else ``main`` for an
imported reference teacher, ``jitter-teacher`` for one trained with colour jitter, else the
teacher's arch and augmentation. The student arch and seed come from the KD student's sidecar
(the seed falls back to ``s<N>``/``seed<N>`` in the folder name). Writes README.md (mean ± sample
std over seeds), one bar chart per probe, and copies one Grad-CAM overlay grid per group.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from advimage.eval.plots import eps_label, label_axes, md_row, md_table, save_png, subplots

# Ojha et al. (2023), Table 2, CIFAR-100: fooling rate (%) of the independent vs the KL (Hinton
# KD) student on the teacher's adversarial images, for the paper's three teacher/student pairs
PAPER_TABLE2 = [(31.2, 48.6), (42.4, 51.9), (36.6, 43.3)]
Key = tuple[str, str]  # (teacher group, student arch)


def _group(doc: dict[str, Any]) -> str:
    if doc.get("tag"):
        return str(doc["tag"])
    t = doc.get("models", {}).get("teacher", {})
    if t.get("imported"):
        return "main"
    if t.get("augment") == "jitter":
        return "jitter-teacher"
    return f"{t.get('arch', 'teacher')} ({t.get('augment') or 'unknown'} aug.)"


def _seed(doc: dict[str, Any], folder: Path) -> str:
    seed = doc.get("models", {}).get("kd", {}).get("seed")
    if seed is None:
        m = re.search(r"(?:^|[-_])(?:seed|s)(\d+)(?:$|[-_])", folder.name)
        seed = m.group(1) if m else "?"
    return str(seed)


def load_runs(root: Path) -> dict[Key, list[tuple[str, Path, dict[str, Any]]]]:
    runs: dict[Key, list[tuple[str, Path, dict[str, Any]]]] = defaultdict(list)
    for path in sorted(root.rglob("transfer.json")):
        doc = json.loads(path.read_text())
        arch = doc.get("models", {}).get("kd", {}).get("arch", "?")
        runs[(_group(doc), arch)].append((_seed(doc, path.parent), path.parent, doc))
    return dict(runs)


def _stats(values: list[float | None]) -> tuple[float, float, int]:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return float("nan"), float("nan"), 0
    spread = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return statistics.fmean(vals), spread, len(vals)


def _pct(values: list[float | None]) -> str:
    mean, spread, n = _stats(values)
    if n == 0:
        return "n/a"
    return f"{100 * mean:.1f}" if n == 1 else f"{100 * mean:.1f} ± {100 * spread:.1f}"


def _at(rows: list[dict[str, Any]] | None, eps: float) -> dict[str, Any] | None:
    """The row of ``rows`` crafted at ``eps`` (runs may use different eps lists)."""
    return next((r for r in rows or [] if abs(r["eps"] - eps) < 1e-9), None)


def _gap(a: list[float | None], b: list[float | None]) -> list[float | None]:
    """Paired per-seed difference a - b."""
    return [None if x is None or y is None else x - y for x, y in zip(a, b, strict=True)]


def _bars(path: Path, cats: list[str], series: dict[str, list[list[float | None]]], title: str,
          ylabel: str, hline: float | None = None) -> None:
    """Grouped bars (mean, error bar = sample std over seeds) in percent."""
    bars = len(cats) * max(1, len(series))
    fig, ax = subplots(figsize=(min(14.0, max(5.0, 0.3 * bars)), 3.6))  # inches; 0.3 per bar
    width = 0.8 / max(1, len(series))
    for j, (name, per_cat) in enumerate(series.items()):
        stats = [_stats(v) for v in per_cat]
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(cats))]
        ax.bar(xs, [100 * s[0] for s in stats], width, yerr=[100 * s[1] for s in stats],
               label=name, capsize=3)
    if hline is not None:
        ax.axhline(100 * hline, color="gray", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(cats)))
    ax.set_xticklabels(cats, fontsize=7)
    label_axes(ax, ylabel=ylabel, title=title, title_size=9, legend_size=7)
    save_png(fig, path, dpi=90)


def _fooling(runs: dict[Key, list], out: Path) -> list[str]:
    lines = ["## Adversarial vulnerability (fooling rate, %)", "",
             "I-FGSM on the teacher; only images that fool the teacher are kept; rate = share of "
             "kept images whose student prediction changes. Control: the same on images crafted "
             "on a foreign network of the student's architecture (no gap expected).", "",
             "Gaps are paired per seed (KD minus independent, percentage points).", "",
             *md_table(["teacher", "student", "eps", "seeds", "kept (mean)", "KD", "independent",
                        "control KD", "control independent", "gap", "control gap"])]
    cats: list[str] = []
    series: dict[str, list[list[float | None]]] = {k: [] for k in
                                                   ("KD", "independent", "control KD",
                                                    "control independent")}
    for (group, arch), items in runs.items():
        for eps in items[0][2]["results"]["eps"]:
            rows = [_at(d["results"]["fooling_rate"], eps) for _, _, d in items]
            ctrl = [_at(d["results"].get("control"), eps) for _, _, d in items]
            vals = {
                "KD": [r["rates"]["kd"] if r else None for r in rows],
                "independent": [r["rates"]["independent"] if r else None for r in rows],
                "control KD": [c["rates"]["kd"] if c else None for c in ctrl],
                "control independent": [c["rates"]["independent"] if c else None for c in ctrl],
            }
            gaps = [_gap(vals["KD"], vals["independent"]),
                    _gap(vals["control KD"], vals["control independent"])]
            kept = statistics.fmean(r["kept"] for r in rows if r)
            lines.append(md_row([group, arch, eps_label(eps), len(items), f"{kept:.0f}",
                                 *(_pct(v) for v in [*vals.values(), *gaps])]))
            cats.append(f"{group}\n{arch}\n{eps_label(eps)}")
            for k, v in vals.items():
                series[k].append(v)
    lines += ["", "Ojha et al. (2023), Table 2 (CIFAR-100, three teacher/student pairs), fooling "
              "rate independent vs KL: " + "; ".join(f"{a} vs {b}" for a, b in PAPER_TABLE2)
              + " (gap " + ", ".join(f"+{b - a:.1f}" for a, b in PAPER_TABLE2) + " points).", ""]
    if cats:
        _bars(out / "fooling_rate.png", cats, series, "Fooling rate on teacher / foreign "
              "adversarial images", "fooling rate (%)")
        lines += ["![fooling rate](fooling_rate.png)", ""]
    return lines


def _simple(runs: dict[Key, list], out: Path, title: str, note: str, fields: dict[str, Any],
            png: str, hline: float | None = None) -> list[str]:
    """One row per (teacher, student arch); ``fields``: column -> doc -> value or None."""
    lines = [f"## {title}", "", note, "", *md_table(["teacher", "student", "seeds", *fields])]
    cats, series = [], {k: [] for k in fields}
    for (group, arch), items in runs.items():
        vals = {k: [f(d) for _, _, d in items] for k, f in fields.items()}
        if all(v is None for col in vals.values() for v in col):
            continue
        lines.append(md_row([group, arch, len(items), *(_pct(v) for v in vals.values())]))
        cats.append(f"{group}\n{arch}")
        for k, v in vals.items():
            series[k].append(v)
    if cats:
        _bars(out / png, cats, series, title, "%", hline)
        lines += ["", f"![{title}]({png})"]
    return [*lines, ""]


def _get(*keys: str):  # noqa: ANN202
    def f(doc: dict[str, Any]) -> float | None:
        cur: Any = doc["results"]
        for k in keys:
            if cur is None:
                return None
            cur = cur.get(k)
        return cur
    return f


def _training(dirs: list[Path]) -> list[str]:
    lines = ["## Training runs (recipes, accuracy, wall-clock)", "",
             *md_table(["run", "arch", "arm", "seed", "dataset", "augment", "epochs", "batch", "lr",
                        "train limit", "tau/alpha", "test accuracy (%)", "seconds"])]
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
                "n/a" if acc is None else f"{100 * acc:.1f}", f"{secs:.1f}"]))
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, help="folder holding transfer.json files (recursively)")
    p.add_argument("-o", "--out", type=Path, default=Path(__file__).parent)
    p.add_argument("--train-runs", type=Path, action="append", default=None,
                   help="folders holding training model.json sidecars (default: RUNS)")
    p.add_argument("--preface", type=Path, default=None,
                   help="markdown inserted after the title (setup, deviations, findings)")
    a = p.parse_args(argv)
    runs = load_runs(a.runs)
    if not runs:
        raise SystemExit(f"no transfer.json under {a.runs}")
    a.out.mkdir(parents=True, exist_ok=True)
    lines = ["# What knowledge gets distilled: transfer probes", "",
             "Ojha et al. (NeurIPS 2023), reproduced on CIFAR-10 with `advimage eval transfer`. "
             "Numbers are mean ± sample std over seeds (in %).", ""]
    if a.preface is not None:
        lines += [a.preface.read_text(encoding="utf-8").strip(), ""]
    lines += ["Runs: " + "; ".join(f"{g} / {arch}: seeds {', '.join(s for s, _, _ in it)}"
                                   for (g, arch), it in runs.items()), ""]
    lines += _fooling(runs, a.out)
    lines += _simple(runs, a.out, "Agreement with the teacher (top-1, clean images)",
                     "Clean accuracy beside.", {
                         "KD": _get("agreement", "kd"),
                         "independent": _get("agreement", "independent"),
                         "teacher acc.": _get("accuracy", "teacher"),
                         "KD acc.": _get("accuracy", "kd"),
                         "independent acc.": _get("accuracy", "independent")},
                     "agreement.png")
    lines += _simple(runs, a.out, "Localization (Grad-CAM of the true class)",
                     "Share of images whose teacher map is more cosine-similar to the KD "
                     "student's than to the independent student's (chance 50%).",
                     {"closer to KD": _get("gradcam", "share_closer_to_kd")},
                     "gradcam_share.png", hline=0.5)
    lines += _simple(runs, a.out, "Invariance to colour jitter",
                     "Share of images whose prediction is unchanged by colour jitter "
                     "(brightness/contrast/saturation 0.4, fixed seed).", {
                         "teacher": _get("invariance", "rates", "teacher"),
                         "KD": _get("invariance", "rates", "kd"),
                         "independent": _get("invariance", "rates", "independent")},
                     "invariance.png")
    overlays = []
    for (group, arch), items in runs.items():
        seed, folder, _ = items[0]
        if (folder / "gradcam.png").exists():
            name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"overlay-{group}-{arch}-s{seed}.png")
            shutil.copyfile(folder / "gradcam.png", a.out / name)
            overlays.append(f"![{group} {arch} seed {seed}]({name})")
    if overlays:
        lines += ["## Grad-CAM overlays (input, teacher, KD, independent)", "", *overlays, ""]
    lines += _training(a.train_runs or [a.runs])
    (a.out / "README.md").write_text("\n".join(lines), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
