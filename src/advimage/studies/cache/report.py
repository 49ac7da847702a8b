"""Tables and PNG plots of ``reports/cache/README.md``: the cache model of Orhan (2018), "A Simple
Cache Model for Image Recognition", on CIFAR-10 (accuracy, key depth, robustness, minimal
budgets), rebuilt from the study folders under ``runs/cache``.

:func:`build_report` returns the markdown sections and writes ``depth.png``, ``robust_eps.png``
and ``minimal_eps.png`` into the output folder; the prose of the README is written by hand
around the tables. Every accuracy table states the test images ``n`` it was measured on (an ``n``
column, or ``n = ...`` in a column title), from which the HTML page
(:mod:`advimage.studies.cache.report_html`) puts a Wilson 95% interval beside each rate; the
accuracy curves carry that interval as error bars.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from advimage.eval.plots import label_axes, md_row, md_table, save_png, subplots
from advimage.formatting import rate_interval
from advimage.studies.cache.robust import min_eps

__all__ = ["LABELS", "accuracy_table", "build_report", "depth_plot", "minimal_table",
           "robust_tables"]

LABELS = {"baseline": "baseline", "cache": "cache", "cache_only": "cache-only"}
_ACC_MODELS = ("resnet20_exact", "resnet20", "resnet32", "resnet32_last", "resnet56")


def _load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _yerr(rates: Sequence[float], n: int | None) -> list[list[float]]:
    """Lower and upper Wilson 95% distances in points of ``rates`` (fractions) over n images."""
    cis = [rate_interval(r, n) if n else (r, r) for r in rates]
    return [[100 * max(0.0, r - c[0]) for r, c in zip(rates, cis, strict=True)],
            [100 * max(0.0, c[1] - r) for r, c in zip(rates, cis, strict=True)]]


def _n_test(r: dict[str, Any]) -> str:
    """The test images of an accuracy run: ``n_test``, else its paired bootstrap's ``n``."""
    n = r.get("n_test") or (r.get("gain_cache") or {}).get("n")
    return "n/a" if n is None else str(n)


def _ci(g: dict[str, float]) -> str:
    return f"{g['gain'] * 100:+.2f} [{g['lo'] * 100:+.2f}, {g['hi'] * 100:+.2f}]"


def accuracy_table(runs: Path) -> str:
    """Clean accuracy of baseline, cache and cache-only per model (``runs/acc/<model>``)."""
    lines = md_table(["model", "key layers (dim)", "scoring", "theta / lambda (cache-only theta)",
                      "n", "baseline", "cache", "cache-only", "cache - baseline [95% CI]",
                      "cache-only - baseline [95% CI]"])
    for name in _ACC_MODELS:
        r = _load(runs / "acc" / name / "results.json")
        if r is None:
            lines.append(f"| {name} | not run | | | | | | | | |")
            continue
        lines.append(md_row([
            f"{r['model']}", f"{', '.join(r['layers'])} ({r['key_dim']})",
            f"{r['test_mode']}{'' if r['k'] is None else ' top-' + str(r['k'])}",
            f"{r['theta']:g} / {r['lam']:g} ({r['theta_cache_only']:g})", _n_test(r),
            f"{r['baseline_test_accuracy']:.2%}", f"{r['cache_test_accuracy']:.2%}",
            f"{r['cache_only_test_accuracy']:.2%}", _ci(r["gain_cache"]),
            _ci(r["gain_cache_only"])]))
    return "\n".join(lines)


def _depth_rows(full: dict[str, Any], small: dict[str, Any] | None) -> list[str]:
    by_layer = {r["layer"]: r for r in (small or {"rows": []})["rows"]}
    lines = []
    for r in full["rows"]:
        s = by_layer.get(r["layer"])
        other = f"{s['test_accuracy']:.2%}" if s else ""
        best = max(r["test_accuracy_by_theta"].items(), key=lambda kv: kv[1])
        lines.append(md_row([r["layer"], r["dim"], f"{r['theta']:g}",
                             f"{r['test_accuracy']:.2%}",
                             f"{best[1]:.2%} (theta {best[0]})", other]))
    return lines


def _depth_header(full: dict[str, Any] | None, small: dict[str, Any] | None) -> list[str]:
    """The depth table's titles, each rate column with its test images ``n = ...``."""
    n_full = "" if full is None else f", n = {full['n_test']}"
    n_small = "" if small is None else f" (n = {small['n_test']})"
    return ["layer", "dim", "theta (val)", f"cache-only test acc. (50k keys{n_full})",
            f"best over theta (oracle{n_full})", f"10k keys{n_small}"]


def depth_plot(runs: Path, out: Path) -> str:
    """Cache-only accuracy per key layer (``runs/depth``): table, and ``out/depth.png`` (Wilson
    95% error bars; the network's accuracy with its interval shaded)."""
    fig, ax = subplots(figsize=(6, 3.6))
    full = _load(runs / "depth" / "resnet20" / "depth.json")
    small = _load(runs / "depth" / "resnet20_10k" / "depth.json")
    lines = md_table(_depth_header(full, small))
    for res, style, label in ((full, "o-", "50,000 keys"), (small, "s--", "10,000 keys")):
        if res is None:
            continue
        xs, acc = [r["layer"] for r in res["rows"]], [r["test_accuracy"] for r in res["rows"]]
        bars = ax.errorbar(xs, [100 * a for a in acc], yerr=_yerr(acc, res["n_test"]),
                           fmt=style, capsize=2, label=f"cache-only, {label} "
                           f"({res['n_test']} test images)")
        base, colour = res["baseline_test_accuracy"], bars.lines[0].get_color()
        ax.axhline(100 * base, ls=":", color=colour,
                   label=f"network alone ({res['n_test']} test images)")
        lo, hi = rate_interval(base, res["n_test"])
        ax.axhspan(100 * lo, 100 * hi, color=colour, alpha=0.12, lw=0)
    if full is not None:
        best = [max(r["test_accuracy_by_theta"].values()) for r in full["rows"]]
        ax.errorbar([r["layer"] for r in full["rows"]], [100 * b for b in best],
                    yerr=_yerr(best, full["n_test"]), fmt="^:", capsize=2,
                    label="cache-only, 50,000 keys, best theta on test (oracle)")
        lines += _depth_rows(full, small)
    label_axes(ax, xlabel="key layer (ResNet-20, input -> output)", ylabel="test accuracy (%)",
               title="Cache-only accuracy vs key depth", legend_size=7, grid=True)
    save_png(fig, out / "depth.png", dpi=110)
    return "\n".join(lines)


def _robust_run(folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """``robust.json`` with the class-wise top-m attacks merged in, and every correct mask."""
    r = _load(folder / "robust.json")
    if r is None:
        return None
    correct = dict(np.load(folder / "robust_correct.npz"))
    for extra_path in sorted(folder.glob("classtopm*.json")):  # class-wise top-m attacks
        r["attacks"] = r["attacks"] + _load(extra_path)["attacks"]
        correct.update(np.load(extra_path.with_name(extra_path.stem + "_correct.npz")))
    worst: dict[str, dict[str, float]] = {}
    for e in sorted({a["eps"] for a in r["attacks"]}):
        worst[f"{e:.6g}"] = {c: float(np.logical_and.reduce(
            [correct[f"clean/{c}"]] + [correct[f"{a['label']}/{c}"] for a in r["attacks"]
                                       if a["eps"] == e]).mean()) for c in LABELS}
    r["worst_case"] = worst
    r["min_eps"] = min_eps(r["attacks"], correct)  # over every attack, top-m ones included
    return r, correct


def _attack_lines(r: dict[str, Any]) -> list[str]:
    lines = [f"n = {r['n']} class-balanced test images, L-inf, scored with "
             f"{r['eval_mode']} lookup (k = {r['k']}); theta {r['theta']:g}, lambda "
             f"{r['lam']:g}, cache-only theta {r['theta_cache_only']:g}, surrogate theta "
             f"{r['surrogate_theta']:g}.", "",
             *md_table(["attack (crafted on)", "eps", "baseline", "cache", "cache-only",
                        "seconds"]),
             f"| clean | 0 | {r['clean']['baseline']:.1%} | {r['clean']['cache']:.1%} | "
             f"{r['clean']['cache_only']:.1%} | |"]
    for a in sorted(r["attacks"], key=lambda a: -a["eps"]):
        lines.append(md_row([f"{a['attack']}-{a['steps']} ({a['crafted_on']})",
                             f"{a['eps'] * 255:.3g}/255", f"{a['baseline']:.1%}",
                             f"{a['cache']:.1%}", f"{a['cache_only']:.1%}",
                             f"{a['seconds']:.0f}"]))
    return lines


def _worst_lines(r: dict[str, Any]) -> list[str]:
    lines = ["", "Worst case over every attack at that budget (an image counts as robust only "
             "if it survives all of them):", "",
             *md_table(["eps", "baseline", "cache", "cache-only"])]
    for e, w in sorted(r["worst_case"].items(), key=lambda kv: float(kv[0])):
        lines.append(md_row([f"{float(e) * 255:.3g}/255", f"{w['baseline']:.1%}",
                             f"{w['cache']:.1%}", f"{w['cache_only']:.1%}"]))
    lines += ["", *md_table(["classifier", "median smallest fooling eps (x/255)",
                             "images never fooled"])]
    for c, m in r["min_eps"].items():
        lines.append(md_row([LABELS[c], f"{m['median_eps_255']:.3g}", m["survive_all"]]))
    return lines


def _robust_plot(r: dict[str, Any], out: Path) -> None:
    """Worst-case accuracy vs eps, plus transfer-only accuracy, with Wilson 95% error bars
    over the run's n images: ``out/robust_eps.png``."""
    fig, ax = subplots(figsize=(6, 3.6))
    eps = sorted(float(e) for e in r["worst_case"])
    for c in LABELS:
        acc = [r["clean"][c]] + [r["worst_case"][f"{e:.6g}"][c] for e in eps]
        ax.errorbar([0] + [e * 255 for e in eps], [100 * a for a in acc],
                    yerr=_yerr(acc, r["n"]), fmt="o-", capsize=2,
                    label=f"{LABELS[c]}: worst case (white-box + transfer)")
    tr = [a for a in r["attacks"] if a["crafted_on"] == "baseline" and a["attack"] == "pgd"]
    for c in ("cache", "cache_only"):
        pts = sorted((a["eps"] * 255, a[c]) for a in tr)
        ax.errorbar([p[0] for p in pts], [100 * p[1] for p in pts],
                    yerr=_yerr([p[1] for p in pts], r["n"]), fmt="x:", capsize=2,
                    label=f"{LABELS[c]}: PGD transfer from baseline only")
    label_axes(ax, xlabel="L-inf eps (x/255)", ylabel="accuracy (%)",
               title=f"ResNet-20 + cache under attack ({r['n']} test images)", legend_size=7,
               grid=True)
    save_png(fig, out / "robust_eps.png", dpi=110)


def robust_tables(runs: Path, name: str, plot: bool, out: Path) -> str:
    """Robustness tables of ``runs/robust/<name>``; ``plot`` also writes ``robust_eps.png``."""
    loaded = _robust_run(runs / "robust" / name)
    if loaded is None:
        return "(robustness study not run)"
    r, _ = loaded
    lines = _attack_lines(r) + _worst_lines(r)
    if plot:
        _robust_plot(r, out)
    return "\n".join(lines)


def minimal_table(runs: Path, out: Path, name: str = "resnet20") -> str:
    """Per-image smallest fooling budgets (``python -m advimage.studies.cache.study minimal``):
    table and CDF plot (``out/minimal_eps.png``, the share's Wilson 95% interval shaded)."""
    r = _load(runs / "minimal" / name / "minimal.json")
    if r is None:
        return "(no minimal-budget run)"
    s, per = r["summary"], r["per_image_255"]
    lines = [f"n = {r.get('n', '?')} class-balanced test images, PGD-{r.get('steps', '?')} per "
             f"budget, grid {r.get('grid_255', '?')} /255; budgets in 1/255.", "",
             *md_table(["classifier / threat model", "median", "mean (fooled)", "never fooled",
                        "clean wrong"])]
    for key, v in s.items():
        c, t = key.split("/")
        lines.append(md_row([f"{LABELS.get(c, c)} / {t}", f"{v['median']:.2f}",
                             f"{v['mean_fooled']:.2f}", v["never_fooled"], v["clean_wrong"]]))
    fig, ax = subplots(figsize=(5, 3.2))
    for c in LABELS:
        key = f"{c}/worst" if f"{c}/worst" in per else f"{c}/white-box"
        if key not in per:
            continue
        v = np.sort(np.asarray(per[key], dtype=float))
        share = np.arange(1, len(v) + 1) / len(v)
        step = ax.step(v, share, where="post", label=LABELS[c])[0]
        fin = np.isfinite(v)  # never-fooled images (inf) are off the plot
        if fin.any():
            ci = np.array([rate_interval(float(y), len(v)) for y in share[fin]])  # (F, 2)
            ax.fill_between(v[fin], ci[:, 0], ci[:, 1], step="post", color=step.get_color(),
                            alpha=0.15, lw=0)
    ax.set_xlim(0, 4)
    label_axes(ax, xlabel="smallest fooling L-inf budget, x/255 (worst case)",
               ylabel="share of images fooled", legend_size=8)
    save_png(fig, out / "minimal_eps.png", dpi=90)
    return "\n".join([*lines, "", "![minimal budgets](minimal_eps.png)"])


def build_report(runs: Path, out: Path, robust: Sequence[str]) -> str:
    """Every section of the cache report as markdown (``## title`` blocks); writes the PNGs.

    Args:
        runs: the study folders (``acc``, ``depth``, ``robust``, ``minimal`` below it).
        out: folder for ``depth.png``, ``robust_eps.png`` (first robust run) and
            ``minimal_eps.png``.
        robust: robustness run folder names under ``runs/robust``.
    """
    sections = [("accuracy", accuracy_table(runs)), ("depth", depth_plot(runs, out))]
    sections += [(f"robustness ({n})", robust_tables(runs, n, i == 0, out))
                 for i, n in enumerate(robust)]
    sections.append(("minimal budgets (resnet20)", minimal_table(runs, out)))
    return "".join(f"\n## {title}\n\n{text}\n" for title, text in sections)
