"""Run reports: self-contained HTML, exports consistent with the per-sample rows, ROC/AUC
against an independent computation, and a real headless-Chromium rendering."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from harness_helpers import tiny_config
from PIL import Image

from advimage.cli import main
from advimage.eval.config import parse_config
from advimage.eval.report_run import accuracy_vs_eps_figure, roc_figure, write_report
from advimage.eval.runner import run_evaluation


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = parse_config(tiny_config(
            defenses=["none", {"name": "quantize", "options": {"bits": 2}}],
            detectors=["msp"]))
        run = run_evaluation(cfg, tmp_path_factory.mktemp("report") / "run", device="cpu")
        write_report(run)
    finally:
        torch.set_num_threads(n)
    return run


def test_html_is_self_contained_with_all_sections(run_dir) -> None:
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html and "src=\"http" not in html
    assert html.count("<script>") == 1 and 'class="sortable"' in html  # inline sorting only
    assert html.count("data:image/png;base64,") >= 5  # curves x2, ROC x2, grids
    for needle in ("Gradient-masking checks", "Clean and robust accuracy", "Detectors (ROC)",
                   "Examples", "Timings", "torch_version", "git_hash", "[zero-gradients] quantize",
                   "[bpda] quantize", "unbounded", "How to read this"):
        assert needle in html, needle
    table = html.split("<h2>Clean and robust accuracy</h2>")[1].split("<h2>")[0]
    assert "fgsm@0.2" not in table  # attacks by label and budget, not by internal id
    assert html.count("How to read this") >= 6  # one per section


def test_rates_carry_wilson_intervals_and_paths_are_relative(run_dir) -> None:
    from scipy.stats import binomtest

    html = (run_dir / "report.html").read_text(encoding="utf-8")
    results = json.loads((run_dir / "results.json").read_text())["results"]
    for r in results:  # an independent Wilson interval (scipy) beside every rate
        for key in ("clean_accuracy", "robust_accuracy"):
            k = round(r[key] * r["n"])
            ci = binomtest(k, r["n"]).proportion_ci(0.95, method="wilson")
            text = f"{100 * r[key]:.1f}% [{100 * ci.low:.1f}, {100 * ci.high:.1f}]"
            assert text in html, text
    assert str(Path.cwd().resolve()) not in html and str(run_dir.resolve()) not in html


def test_exports_agree_with_per_sample_rows(run_dir) -> None:
    with open(run_dir / "samples.csv", newline="") as fh:
        samples = list(csv.DictReader(fh))
    assert len(samples) == 20 * 2 * 4  # images x defenses x (3 attacks + unbounded)
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for s in samples:
        c = counts[(s["defense"], s["attack"])]
        c[0] += 1
        c[1] += int(s["pred_clean"] == s["label"])
        c[2] += int(s["pred_clean"] == s["label"] and s["pred_adv"] == s["label"])
    results = json.loads((run_dir / "results.json").read_text())["results"]
    assert len(results) == len(counts) == 8
    for r in results:
        n, clean, robust = counts[(r["defense"], r["attack"])]
        assert r["n"] == n
        assert r["clean_accuracy"] == pytest.approx(clean / n)
        assert r["robust_accuracy"] == pytest.approx(robust / n)
    with open(run_dir / "results.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 8
    assert (run_dir / "detector_scores.csv").exists()


def test_roc_auc_matches_mann_whitney() -> None:
    rng = np.random.default_rng(0)
    clean, adv = rng.normal(0, 1, 200), rng.normal(1, 1, 150)
    fig, aucs = roc_figure({"pgd": (clean, adv), "perfect": ([0, 1], [5, 6]),
                            "empty": ([0.1], [])})
    # independent AUC: probability that an adversarial score beats a clean one (ties 1/2)
    diff = adv[:, None] - clean[None, :]
    expected = float((diff > 0).mean() + 0.5 * (diff == 0).mean())
    assert aucs["pgd"] == pytest.approx(expected, abs=1e-12)
    assert aucs["perfect"] == 1.0 and "empty" not in aucs
    assert len(fig.axes[0].lines) == 3  # two curves and the chance diagonal


def test_accuracy_vs_eps_figure_draws_one_line_per_attack() -> None:
    rows = [{"label": "pgd", "norm": "linf", "eps": e, "robust_accuracy": a,
             "clean_accuracy": 0.9} for e, a in ((0.2, 0.1), (0.1, 0.5))]
    rows.append({"label": "fgsm", "norm": "linf", "eps": 0.1, "robust_accuracy": 0.6,
                 "clean_accuracy": 0.9})
    fig = accuracy_vs_eps_figure(rows)
    ax = fig.axes[0]
    pgd = next(c for c in ax.containers if c.get_label() == "pgd (linf)")
    line = pgd.lines[0]
    assert list(line.get_xdata()) == [0.1, 0.2] and list(line.get_ydata()) == [0.5, 0.1]
    segs = pgd.lines[2][0].get_segments()  # no n: zero-length error bars
    assert all(seg[0][1] == seg[1][1] for seg in segs)


def test_accuracy_curves_have_wilson_error_bars_and_k255_ticks() -> None:
    from scipy.stats import binomtest

    rows = [{"label": "pgd", "norm": "linf", "eps": k / 255, "robust_accuracy": a,
             "clean_accuracy": 0.9, "n": 40} for k, a in ((2, 0.5), (8, 0.1))]
    ax = accuracy_vs_eps_figure(rows).axes[0]
    bars = ax.containers[0].lines[2][0].get_segments()
    for seg, r in zip(bars, rows, strict=True):
        ci = binomtest(round(r["robust_accuracy"] * 40), 40).proportion_ci(method="wilson")
        assert seg[0][1] == pytest.approx(ci.low) and seg[1][1] == pytest.approx(ci.high)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2/255", "8/255"]


def test_cli_report_writes_to_out(run_dir, tmp_path, capsys) -> None:
    out = tmp_path / "r.html"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    assert "report:" in capsys.readouterr().out and out.stat().st_size > 10_000


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(run_dir, tmp_path) -> None:
    shot = tmp_path / "shot.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}",
         f"--screenshot={shot}", "--window-size=1200,1600",
         (run_dir / "report.html").resolve().as_uri()],
        capture_output=True, timeout=120, check=False)
    assert shot.exists(), "chromium wrote no screenshot"
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (1600, 1200)
    non_white = (img < 240).any(axis=2).mean()
    assert non_white > 0.03, f"page looks blank ({non_white:.1%} non-white pixels)"
    reds = ((img[..., 0] > 240) & (img[..., 1] < 240) & (img[..., 2] < 240)).mean()
    assert reds > 0.01  # the warning boxes of the masked quantize defense are drawn
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # text and figures, not a fill
