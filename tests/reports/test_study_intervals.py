"""Wilson 95% intervals in the NIM and distill reports' remaining tables and curves (issue 21,
item 2): the NIM training table and trade-off plot, distill's agreement / localization /
invariance / training tables and bar charts. Intervals are checked against scipy's Wilson
interval (``scipy.stats.binomtest``, in :mod:`interval_helpers`), independently of
``advimage.formatting``, on the committed data (reports/distill/data, reports/nim/README.md)
and on synthetic runs.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path
from typing import Any

import pytest
from interval_helpers import ROOT, assert_spans, bar_spans, capture, check_cell, tables, wilson

# -- distill ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def distill(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from advimage.studies.distill.report import build_report
    from advimage.studies.distill.report_data import load_runs
    from advimage.studies.distill.report_html import write_html

    data = ROOT / "reports/distill/data"
    out = tmp_path_factory.mktemp("distill")
    mp = pytest.MonkeyPatch()
    figs = capture(mp, "advimage.studies.distill.report")
    try:
        build_report(data / "transfer", out, train_runs=[data / "train"])
    finally:
        mp.undo()
    return {"tables": tables(write_html(out)), "figs": figs,
            "runs": load_runs(data / "transfer"), "train": data / "train"}


_DISTILL = {  # section -> column -> the stored rate's path in results, and n's path
    "Agreement with the teacher (top-1, clean images)": {
        "KD": (("agreement", "kd"), ("n",)),
        "independent": (("agreement", "independent"), ("n",)),
        "teacher acc.": (("accuracy", "teacher"), ("n",)),
        "KD acc.": (("accuracy", "kd"), ("n",)),
        "independent acc.": (("accuracy", "independent"), ("n",))},
    "Localization (Grad-CAM of the true class)": {
        "closer to KD": (("gradcam", "share_closer_to_kd"), ("gradcam", "n"))},
    "Invariance to colour jitter": {
        "teacher": (("invariance", "rates", "teacher"), ("n",)),
        "KD": (("invariance", "rates", "kd"), ("n",)),
        "independent": (("invariance", "rates", "independent"), ("n",))},
}


def _get(doc: dict[str, Any], path: tuple[str, ...]) -> Any:
    for k in path:
        doc = doc[k]
    return doc


def test_distill_rate_tables_carry_wilson_intervals(distill: dict[str, Any]) -> None:
    checked = 0
    for section, cols in _DISTILL.items():
        (head, rows), = distill["tables"][section]
        assert head[3] == "n"
        for row in rows:
            items = distill["runs"][(row[0], row[1])]
            if len(items) > 1:  # several seeds: mean ± std, no interval
                assert all("±" in c and "[" not in c for c in row[4:]), row
                continue
            res = items[0][2]["results"]
            assert row[3] == str(res["n"])
            for j, col in enumerate(head[4:], start=4):
                rate_at, n_at = cols[col]
                check_cell(row[j], _get(res, rate_at), _get(res, n_at))
                checked += 1
    assert checked == 2 * (5 + 1 + 3)  # the two single-seed groups


def test_distill_training_and_fooling_intervals(distill: dict[str, Any]) -> None:
    (head, rows), = distill["tables"]["Training runs (recipes, accuracy, wall-clock)"]
    assert len(rows) == 13
    for row in rows:
        side = json.loads((distill["train"] / row[0] / "model.json").read_text())
        n = side["train_config"]["test_limit"]
        assert row[head.index("test images")] == str(n) == "2000"
        check_cell(row[head.index("test accuracy (%)")], side["accuracy"], n)
    (head, rows), = distill["tables"]["Adversarial vulnerability (fooling rate, %)"]
    single = [r for r in rows if r[3] == "1"]
    assert len(single) == 6
    for row in single:
        res = distill["runs"][(row[0], row[1])][0][2]["results"]
        fr = next(f for f in res["fooling_rate"] if f"{f['eps'] * 255:.0f}/255" == row[2])
        for col, key in (("KD", "kd"), ("independent", "independent")):
            check_cell(row[head.index(col)], fr["rates"][key], fr["kept"])


def test_distill_bars_show_wilson_for_one_seed_and_std_for_several(distill) -> None:
    ax = distill["figs"]["agreement.png"].axes[0]
    bars = {c.get_label(): c for c in ax.containers if hasattr(c, "errorbar")}
    for col, key in (("KD", ("agreement", "kd")),
                     ("independent acc.", ("accuracy", "independent"))):
        spans = bar_spans(bars[col])
        assert len(spans) == len(distill["runs"])
        for (lo, hi), items in zip(spans, distill["runs"].values(), strict=True):
            vals = [_get(d["results"], key) for _, _, d in items]
            if len(vals) == 1:
                n = items[0][2]["results"]["n"]
                want = wilson(round(vals[0] * n), n)
            else:
                m, s = 100 * statistics.fmean(vals), 100 * statistics.stdev(vals)
                want = (m - s, m + s)
            assert_spans([(lo, hi)], [want])


# -- NIM -------------------------------------------------------------------------------------


def test_nim_training_table_intervals_on_the_committed_report(tmp_path: Path) -> None:
    from advimage.studies.nim.report_html import write_html

    nim = tmp_path / "nim"
    shutil.copytree(ROOT / "reports/nim", nim, ignore=shutil.ignore_patterns("data", "*.py"))
    (head, rows), = tables(write_html(nim))["Training runs (wall-clock)"]
    by_run = {r[0]: r for r in rows}
    for run, acc in (("nim-cls", 0.703), ("mim-cls", 0.216), ("pgd-at", 0.581)):
        row = by_run[run]
        assert row[head.index("test images")] == "2000"
        check_cell(row[head.index("final")], acc, 2000, exact=True)  # the README's own rate
    assert by_run["nim"][head.index("final")] == "loss 0.3442"  # not a rate: unchanged


def test_nim_training_table_reads_test_images_from_the_config(tmp_path: Path) -> None:
    from advimage.studies.nim.report_train import training

    cls = tmp_path / "cls"
    cls.mkdir()
    (cls / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "test_acc": 0.45}) + "\n")
    (cls / "config.json").write_text(json.dumps({"train": {"model": "resnet20",
                                                           "test_limit": 40}}))
    full = tmp_path / "full"
    shutil.copytree(cls, full)
    (full / "config.json").write_text(json.dumps({"train": {"model": "resnet20"}}))
    lines = training({"cls": cls, "full": full})
    assert "| cls | classifier | 1 | 0.0 | test acc. 45.0% | 40 |" in "\n".join(lines)
    assert "| full | classifier | 1 | 0.0 | test acc. 45.0% | all |" in "\n".join(lines)


def test_nim_tradeoff_error_bars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from advimage.studies.nim.report_images import tradeoff_plot
    from advimage.studies.nim.report_run import Attack, Run

    figs = capture(monkeypatch, "advimage.studies.nim.report_images")
    att = Attack("pgd@0.0313725", "pgd", "pgd", 8 / 255, 10, 1, 1, "white-box", "linf")
    ref = Run(tmp_path, [{"defense": "none", "attack": att.key, "clean_accuracy": 0.7,
                          "robust_accuracy": 0.1, "n": 300}], [], {}, [], [att])
    curves = [("clean", "nim", 0, {0.0: 0.69, 70.0: 0.6}),
              ("robust", "nim", 0, {0.0: 0.02, 70.0: 0.2})]
    tradeoff_plot(curves, [("undefended", ref)], att, None, tmp_path / "t.png", 300)
    clean, robust = figs["t.png"].axes[:2]
    for ax, rates in ((clean, (0.69, 0.6)), (robust, (0.02, 0.2))):
        (bars,) = ax.containers
        assert_spans(bar_spans(bars), [wilson(round(r * 300), 300) for r in rates])
    (band,) = clean.patches  # the undefended clean accuracy's interval, shaded
    ys = band.get_patch_transform().transform(band.get_path().vertices)[:, 1]
    assert (min(ys), max(ys)) == pytest.approx(wilson(210, 300), abs=1e-9)
