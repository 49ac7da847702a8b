"""Wilson 95% intervals in the cache report's clean-accuracy and depth tables and its curves
(issue 21, item 2), checked against scipy's Wilson interval (:mod:`interval_helpers`) on
synthetic runs and the committed minimal-budget data (reports/cache/data).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from interval_helpers import ROOT, assert_spans, bar_spans, capture, check_cell, tables, wilson

# -- cache -----------------------------------------------------------------------------------


def _cache_runs(root: Path) -> Path:
    """Synthetic accuracy, depth and robustness runs, and the committed minimal-budget data."""
    acc = {"model": "resnet20", "layers": ["layer3.2", "pool"], "key_dim": 4160,
           "test_mode": "exact", "k": None, "theta": 70, "lam": 0.2, "theta_cache_only": 30,
           "n_test": 2000, "baseline_test_accuracy": 1801 / 2000,
           "cache_test_accuracy": 1823 / 2000, "cache_only_test_accuracy": 1799 / 2000,
           **{g: {"gain": 0.01, "lo": 0.0, "hi": 0.02, "n": 2000}
              for g in ("gain_cache", "gain_cache_only")}}
    depth = {"n_test": 1000, "baseline_test_accuracy": 0.912,
             "rows": [{"layer": f"l{i}", "dim": 64, "theta": 30, "test_accuracy": a,
                       "test_accuracy_by_theta": {"30": a, "70": a + 0.004}}
                      for i, a in enumerate((0.52, 0.746, 0.906))]}
    small = {**depth, "n_test": 500,
             "rows": [{**r, "test_accuracy": r["test_accuracy"] - 0.01} for r in depth["rows"]]}
    for sub, doc in (("acc/resnet20/results.json", acc), ("depth/resnet20/depth.json", depth),
                     ("depth/resnet20_10k/depth.json", small)):
        (root / sub).parent.mkdir(parents=True)
        (root / sub).write_text(json.dumps(doc))
    rng = np.random.default_rng(0)
    folder = root / "robust" / "tiny"
    folder.mkdir(parents=True)
    masks = {f"{k}/{c}": rng.random(40) < p for k, p in (("clean", 0.9), ("pgd8", 0.3))
             for c in ("baseline", "cache", "cache_only")}
    np.savez(folder / "robust_correct.npz", **masks)
    rate = {c: float(masks[f"pgd8/{c}"].mean()) for c in ("baseline", "cache", "cache_only")}
    (folder / "robust.json").write_text(json.dumps({
        "n": 40, "eval_mode": "exact", "k": None, "theta": 70, "lam": 0.2,
        "theta_cache_only": 30, "surrogate_theta": 10,
        "clean": {c: float(masks[f"clean/{c}"].mean()) for c in rate},
        "attacks": [{"attack": "pgd", "steps": 10, "crafted_on": "baseline", "label": "pgd8",
                     "eps": 8 / 255, "seconds": 1.0, **rate}]}))
    (root / "minimal/resnet20").mkdir(parents=True)
    shutil.copyfile(ROOT / "reports/cache/data/minimal-resnet20.json",
                    root / "minimal/resnet20/minimal.json")
    return root


def test_cache_clean_accuracy_and_depth_intervals(tmp_path, monkeypatch) -> None:
    from advimage.studies.cache.report import build_report
    from advimage.studies.cache.report_html import write_html

    runs = _cache_runs(tmp_path / "runs")
    figs = capture(monkeypatch, "advimage.studies.cache.report")
    out = tmp_path / "out"
    out.mkdir()
    page = tables(write_html(build_report(runs, out, ["tiny"]), runs, out, ["tiny"]))
    (head, rows), = page["accuracy"]
    row = next(r for r in rows if r[1] != "not run")
    assert row[head.index("n")] == "2000"
    for col, k in (("baseline", 1801), ("cache", 1823), ("cache-only", 1799)):
        check_cell(row[head.index(col)], k / 2000, 2000, digits=2, exact=True)
    (head, rows), = page["depth"]
    assert head[3:] == ["cache-only test acc. (50k keys, n = 1000)",
                        "best over theta (oracle, n = 1000)", "10k keys (n = 500)"]
    for row, a in zip(rows, (0.52, 0.746, 0.906), strict=True):
        check_cell(row[3], a, 1000, digits=2, exact=True)
        check_cell(row[4], a + 0.004, 1000, digits=2, exact=True)
        assert row[4].endswith("(theta 70)")
        check_cell(row[5], a - 0.01, 500, digits=2, exact=True)
    # the curves: cache-only accuracy per layer and the robust accuracies carry Wilson bars
    full = figs["depth.png"].axes[0].containers[0]
    assert_spans(bar_spans(full), [wilson(round(a * 1000), 1000) for a in (0.52, 0.746, 0.906)])
    robust = json.loads((runs / "robust/tiny/robust.json").read_text())
    clean_pt = [bar_spans(c)[0] for c in figs["robust_eps.png"].axes[0].containers[:3]]
    assert_spans(clean_pt, [wilson(round(robust["clean"][c] * 40), 40)
                            for c in ("baseline", "cache", "cache_only")])


def test_cache_minimal_budget_cdf_has_wilson_bands(tmp_path, monkeypatch) -> None:
    from advimage.studies.cache.report import minimal_table

    runs = _cache_runs(tmp_path / "runs")
    figs = capture(monkeypatch, "advimage.studies.cache.report")
    minimal_table(runs, tmp_path)
    ax = figs["minimal_eps.png"].axes[0]
    bands = ax.collections
    assert len(bands) == 3  # baseline, cache, cache-only: 100 images each
    bounds = np.array([b for k in range(1, 101) for b in wilson(k, 100)])
    for band in bands:
        ys = np.concatenate([100 * p.vertices[:, 1] for p in band.get_paths()])
        assert len(ys) > 10
        assert np.abs(ys[:, None] - bounds[None, :]).min(axis=1).max() < 1e-9
