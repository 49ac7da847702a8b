"""The page of ``advimage compare`` (:mod:`advimage.eval.compare`): a sortable leaderboard,
the per-attack table, overlaid accuracy-vs-eps curves with Wilson error bars, the masking
findings and the runs compared; self-contained (inline CSS, script and PNGs)."""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from advimage.eval.plots import label_axes, subplots
from advimage.eval.report import HtmlReport
from advimage.formatting import format_eps, format_rate

__all__ = ["HOW_TO_READ", "SORT_SCRIPT", "render_comparison", "sortable_table"]

HOW_TO_READ = (
    "How to read this: one row per run and defense. Every rate is a share of the n test images, "
    "with its Wilson 95% interval in brackets; rows whose intervals overlap may not differ at "
    "all. Budgets are L-inf in pixel units of [0, 1] images (8/255 = eight grey levels) unless "
    "marked L2/L1. 'worst case' counts an image as robust at a budget only if it survived every "
    "attack run at that budget, so it is at most the lowest attack column (the run's strongest "
    "evaluation); a higher worst case is better. Flags name the run's gradient-masking findings "
    "(numbers flagged so may overstate robustness) and 'partial' marks a run with batches "
    "missing. Click a column title to sort.")

SORT_SCRIPT = """<script>
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.style.cursor = "pointer"; th.title = "click to sort";
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0], i = th.cellIndex;
    var dir = th.dataset.dir = th.dataset.dir === "1" ? "-1" : "1";
    Array.from(body.rows).sort(function (a, b) {
      var p = a.cells[i], q = b.cells[i];
      var r = p.dataset.v !== undefined && q.dataset.v !== undefined
        ? p.dataset.v - q.dataset.v : p.textContent.localeCompare(q.textContent);
      return r * dir;
    }).forEach(function (row) { body.appendChild(row); });
  });
});
</script>"""

Cell = tuple[str, float | None]  # (text, sort value; None sorts as text)


def sortable_table(header: Sequence[str], rows: Sequence[Sequence[Cell]]) -> str:
    """An HTML table whose columns sort on click (:data:`SORT_SCRIPT`); numeric cells sort by
    their value, the others by text. Texts are escaped here."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(
            f'<td data-v="{v:.9g}">{html.escape(t)}</td>' if v is not None
            else f"<td>{html.escape(t)}</td>" for t, v in row) + "</tr>" for row in rows)
    return (f'<table class="sortable"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def _rate(cell: dict[str, Any] | None) -> Cell:
    if cell is None:
        return "", -1.0
    return format_rate(cell["robust_accuracy"], cell["n"]), cell["robust_accuracy"]


def _row_head(row: dict[str, Any]) -> list[Cell]:
    return [(row["run"], None), (row["model"], None), (row["defense"], None),
            (str(row["n"]), row["n"]),
            (format_rate(row["clean_accuracy"], row["n"]), row["clean_accuracy"])]


def _leaderboard(doc: dict[str, Any]) -> str:
    """Clean, AutoAttack and worst case per budget, flags; best worst case at the largest
    budget first."""
    budgets = [b["label"] for b in doc["budgets"]]
    has_aa = {c["budget"] for r in doc["rows"] for c in r["autoattack"]}
    header = ["run", "model", "defense", "n", "clean"]
    header += [f"AutoAttack {b}" for b in budgets if b in has_aa]
    header += [f"worst case {b}" for b in budgets] + ["flags"]

    def key(row: dict[str, Any]) -> float:
        w = {c["budget"]: c["robust_accuracy"] for c in row["worst_case"]}
        return -w.get(budgets[-1], -1.0) if budgets else 0.0

    table = []
    for row in sorted(doc["rows"], key=key):
        aa = {c["budget"]: c for c in row["autoattack"]}
        worst = {c["budget"]: c for c in row["worst_case"]}
        table.append([*_row_head(row), *(_rate(aa.get(b)) for b in budgets if b in has_aa),
                      *(_rate(worst.get(b)) for b in budgets),
                      (", ".join(row["flags"]) or "-", None)])
    return sortable_table(header, table)


def _per_attack(doc: dict[str, Any]) -> str:
    order: dict[str, tuple[str, float]] = {}  # column title: (norm, eps), budgets ascending
    for row in doc["rows"]:
        for c in row["attacks"]:
            order.setdefault(f"{c['attack']} {c['budget']}", (c["norm"], c["eps"]))
    cols = sorted(order, key=lambda k: order[k])
    table = []
    for row in doc["rows"]:
        cells = {f"{c['attack']} {c['budget']}": c for c in row["attacks"]}
        table.append([*_row_head(row), *(_rate(cells.get(k)) for k in cols)])
    return sortable_table(["run", "model", "defense", "n", "clean", *cols], table)


def _curves(doc: dict[str, Any], norm: str) -> Any:
    """Worst-case robust accuracy against eps (clean accuracy at eps 0), one line per row,
    Wilson 95% error bars."""
    fig, ax = subplots(figsize=(6.4, 4.0))
    ticks: dict[float, str] = {0.0: "0"}
    for row in doc["rows"]:
        pts = [(0.0, row["clean_accuracy"], row["clean_ci"])]
        pts += [(w["eps"], w["robust_accuracy"], w["ci"]) for w in row["worst_case"]
                if w["norm"] == norm]
        ticks.update({w["eps"]: format_eps(w["eps"], norm) for w in row["worst_case"]
                      if w["norm"] == norm})
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        err = [[max(0.0, p[1] - p[2][0]) for p in pts], [max(0.0, p[2][1] - p[1]) for p in pts]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3,
                    label=f"{row['run']}: {row['defense']}")
    ax.set_xticks(list(ticks), list(ticks.values()), fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    label_axes(ax, xlabel=f"eps ({norm}; 0 = clean accuracy)",
               ylabel="worst-case robust accuracy", legend_size=8, grid=True)
    fig.tight_layout()
    return fig


def render_comparison(doc: dict[str, Any]) -> HtmlReport:
    """The comparison page of a :func:`~advimage.eval.compare.compare_runs` document."""
    report = HtmlReport(f"advimage compare: {len(doc['runs'])} run(s)")
    report.text(HOW_TO_READ, "note")
    for m in doc["mismatches"]:
        report.warning(f"Mismatch (shown because of --allow-mismatch): {m}.")
    for r in doc["runs"]:
        if r["partial"]:
            report.warning(f"Run {r['run']} is partial: {r['batches_done']} of "
                           f"{r['batches_total']} batches done.")
    report.heading("Leaderboard")
    report.raw(_leaderboard(doc))
    report.heading("Robust accuracy per attack and budget")
    report.raw(_per_attack(doc))
    report.heading("Accuracy vs eps")
    for norm in sorted({b["norm"] for b in doc["budgets"]}):
        report.figure(_curves(doc, norm), f"worst-case robust accuracy vs eps ({norm}), "
                                          "error bars: Wilson 95% intervals")
    findings = [(row, f) for row in doc["rows"] for f in row["findings"]]
    report.heading("Gradient-masking findings")
    if not findings:
        report.text("No run shows a symptom of gradient masking (Carlini et al., 2019 checks).")
    for row, f in findings:
        report.warning(f"{row['run']}: {f}")
    report.heading("Runs")
    by_run: dict[str, list[str]] = defaultdict(list)
    for row in doc["rows"]:
        by_run[row["run"]].append(row["defense"])
    report.raw(sortable_table(
        ["run", "name", "model", "data", "budgets", "defenses", "batches"],
        [[(r["run"], None), (r["name"], None), (r["model"], None),
          (", ".join(f"{k}={v}" for k, v in r["data"].items() if v is not None), None),
          (" ".join(r["budgets"]), None), (", ".join(by_run[r["run"]]), None),
          (f"{r['batches_done']} of {r['batches_total']}", None)] for r in doc["runs"]]))
    report.raw(SORT_SCRIPT)
    return report
