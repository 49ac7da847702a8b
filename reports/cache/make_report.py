"""Rebuild the tables and PNG plots of ``reports/cache/README.md`` from ``runs/cache``.

Usage (repository root): ``python reports/cache/make_report.py [--runs runs/cache]``.
Prints the markdown tables; the prose of README.md is written by hand around them.
Studies: ``python -m advimage.studies.cache.study {accuracy,depth,robust,topm,minimal} ...``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from advimage.studies.cache.robust import _min_eps
from advimage.eval.plots import label_axes, md_row, md_table, save_png, subplots

HERE = Path(__file__).resolve().parent
LABELS = {"baseline": "baseline", "cache": "cache", "cache_only": "cache-only"}


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def accuracy_table(runs: Path) -> str:
    lines = md_table(["model", "key layers (dim)", "scoring", "theta / lambda (cache-only theta)",
                      "baseline", "cache", "cache-only", "cache - baseline [95% CI]",
                      "cache-only - baseline [95% CI]"])
    for name in ("resnet20_exact", "resnet20", "resnet32", "resnet32_last", "resnet56"):
        r = _load(runs / "acc" / name / "results.json")
        if r is None:
            lines.append(f"| {name} | not run | | | | | | | |")
            continue
        g, go = r["gain_cache"], r["gain_cache_only"]
        lines.append(md_row([
            f"{r['model']}", f"{', '.join(r['layers'])} ({r['key_dim']})",
            f"{r['test_mode']}{'' if r['k'] is None else ' top-' + str(r['k'])}",
            f"{r['theta']:g} / {r['lam']:g} ({r['theta_cache_only']:g})",
            f"{r['baseline_test_accuracy']:.2%}", f"{r['cache_test_accuracy']:.2%}",
            f"{r['cache_only_test_accuracy']:.2%}",
            f"{g['gain'] * 100:+.2f} [{g['lo'] * 100:+.2f}, {g['hi'] * 100:+.2f}]",
            f"{go['gain'] * 100:+.2f} [{go['lo'] * 100:+.2f}, {go['hi'] * 100:+.2f}]"]))
    return "\n".join(lines)


def depth_plot(runs: Path) -> str:
    fig, ax = subplots(figsize=(6, 3.6))
    lines = md_table(["layer", "dim", "theta (val)", "cache-only test acc. (50k keys)",
                      "best over theta (oracle)", "10k keys"])
    full = _load(runs / "depth" / "resnet20" / "depth.json")
    small = _load(runs / "depth" / "resnet20_10k" / "depth.json")
    for res, style, label in ((full, "o-", "50,000 keys"), (small, "s--", "10,000 keys")):
        if res is None:
            continue
        xs = [r["layer"] for r in res["rows"]]
        ax.plot(xs, [100 * r["test_accuracy"] for r in res["rows"]], style,
                label=f"cache-only, {label} ({res['n_test']} test images)")
        ax.axhline(100 * res["baseline_test_accuracy"], ls=":", color=ax.lines[-1].get_color(),
                   label=f"network alone ({res['n_test']} test images)")
    if full is not None:
        ax.plot([r["layer"] for r in full["rows"]],
                [100 * max(r["test_accuracy_by_theta"].values()) for r in full["rows"]], "^:",
                label="cache-only, 50,000 keys, best theta on test (oracle)")
        by_layer = {r["layer"]: r for r in (small or {"rows": []})["rows"]}
        for r in full["rows"]:
            s = by_layer.get(r["layer"])
            other = f"{s['test_accuracy']:.2%}" if s else ""
            best = max(r["test_accuracy_by_theta"].items(), key=lambda kv: kv[1])
            lines.append(md_row([r["layer"], r["dim"], f"{r['theta']:g}",
                                 f"{r['test_accuracy']:.2%}",
                                 f"{best[1]:.2%} (theta {best[0]})", other]))
    label_axes(ax, xlabel="key layer (ResNet-20, input -> output)", ylabel="test accuracy (%)",
               title="Cache-only accuracy vs key depth", legend_size=7, grid=True)
    save_png(fig, HERE / "depth.png", dpi=110)
    return "\n".join(lines)


def robust_tables(runs: Path, name: str, plot: bool) -> str:
    r = _load(runs / "robust" / name / "robust.json")
    if r is None:
        return "(robustness study not run)"
    folder = runs / "robust" / name
    correct = dict(np.load(folder / "robust_correct.npz"))
    for extra_path in sorted(folder.glob("classtopm*.json")):  # class-wise top-m attacks
        r["attacks"] = r["attacks"] + _load(extra_path)["attacks"]
        correct.update(np.load(extra_path.with_name(extra_path.stem + "_correct.npz")))
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
    worst: dict[str, dict[str, float]] = {}
    for e in sorted({a["eps"] for a in r["attacks"]}):
        worst[f"{e:.6g}"] = {c: float(np.logical_and.reduce(
            [correct[f"clean/{c}"]] + [correct[f"{a['label']}/{c}"] for a in r["attacks"]
                                       if a["eps"] == e]).mean()) for c in LABELS}
    r["worst_case"] = worst
    r["min_eps"] = _min_eps(r["attacks"], correct)  # over every attack, top-m ones included
    lines += ["", "Worst case over every attack at that budget (an image counts as robust only "
              "if it survives all of them):", "",
              *md_table(["eps", "baseline", "cache", "cache-only"])]
    for e, w in sorted(r["worst_case"].items(), key=lambda kv: float(kv[0])):
        lines.append(md_row([f"{float(e) * 255:.3g}/255", f"{w['baseline']:.1%}",
                             f"{w['cache']:.1%}", f"{w['cache_only']:.1%}"]))
    lines += ["", *md_table(["classifier", "median smallest fooling eps (x/255)",
                             "images never fooled"])]
    for c, m in r["min_eps"].items():
        lines.append(md_row([LABELS[c], f"{m['median_eps_255']:.3g}", m["survive_all"]]))
    if not plot:
        return "\n".join(lines)
    # plot: worst-case accuracy vs eps, plus transfer-only accuracy
    fig, ax = subplots(figsize=(6, 3.6))
    eps = sorted(float(e) for e in r["worst_case"])
    for c in LABELS:
        ax.plot([0] + [e * 255 for e in eps],
                [100 * r["clean"][c]] + [100 * r["worst_case"][f"{e:.6g}"][c] for e in eps],
                "o-", label=f"{LABELS[c]}: worst case (white-box + transfer)")
    tr = [a for a in r["attacks"] if a["crafted_on"] == "baseline" and a["attack"] == "pgd"]
    for c in ("cache", "cache_only"):
        pts = sorted((a["eps"] * 255, 100 * a[c]) for a in tr)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "x:",
                label=f"{LABELS[c]}: PGD transfer from baseline only")
    label_axes(ax, xlabel="L-inf eps (x/255)", ylabel="accuracy (%)",
               title=f"ResNet-20 + cache under attack ({r['n']} test images)", legend_size=7,
               grid=True)
    save_png(fig, HERE / "robust_eps.png", dpi=110)
    return "\n".join(lines)


def minimal_table(runs: Path, name: str = "resnet20") -> str:
    """Per-image smallest fooling budgets (``cache_study minimal``): table and CDF plot."""
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
        ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=LABELS[c])
    ax.set_xlim(0, 4)
    label_axes(ax, xlabel="smallest fooling L-inf budget, x/255 (worst case)",
               ylabel="share of images fooled", legend_size=8)
    save_png(fig, HERE / "minimal_eps.png", dpi=90)
    return "\n".join([*lines, "", "![minimal budgets](minimal_eps.png)"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=Path("runs/cache"))
    p.add_argument("--robust", default="resnet20_n500,resnet20",
                   help="robustness run folders under runs/cache/robust (first one plotted)")
    a = p.parse_args()
    names = a.robust.split(",")
    sections = [("accuracy", accuracy_table(a.runs)), ("depth", depth_plot(a.runs))]
    sections += [(f"robustness ({n})", robust_tables(a.runs, n, i == 0))
                 for i, n in enumerate(names)]
    sections.append(("minimal budgets (resnet20)", minimal_table(a.runs)))
    for title, text in sections:
        print(f"\n## {title}\n\n{text}")  # noqa: T201 -- a report script, not library code


if __name__ == "__main__":
    main()
