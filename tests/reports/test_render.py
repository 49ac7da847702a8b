"""Every report kind (run, compare, detection, cache, distill, NIM) rendered in headless Chromium:
no console error or uncaught exception, no broken image, and the key numbers (with Wilson 95%
intervals computed here by scipy, independently of advimage.formatting) in the visible text.

Set ADVIMAGE_SCREENSHOTS=DIR to also keep a 1200x900 screenshot of each page in DIR (how
``reports/screenshots/`` is refreshed).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from report_browser import CHROMIUM, load, screenshot
from scipy.stats import binomtest

from advimage.cli import main

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("run", "compare", "detection", "cache", "distill", "nim")
pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="chromium not installed (apt-get install chromium)")


def wilson(k: int, n: int, digits: int = 1) -> str:
    ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
    return f"{100 * k / n:.{digits}f}% [{100 * ci.low:.1f}, {100 * ci.high:.1f}]"


def _tiny_run(root: Path, name: str) -> Path:
    import sys

    sys.path.insert(0, str(ROOT / "tests" / "eval"))
    from harness_helpers import tiny_config

    cfg = tiny_config(name=name, attacks=[{"name": "fgsm", "eps": ["2/255", "8/255"]},
                                          {"name": "pgd", "eps": ["8/255"],
                                           "options": {"steps": 2}}],
                      defenses=["none"], examples=4)
    (root / f"{name}.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    assert main(["run", str(root / f"{name}.yaml"), "--out", str(root / name), "--no-progress",
                 "--device", "cpu"]) == 0
    return root / name


def _cache_runs(root: Path) -> Path:
    """A synthetic cache study: clean accuracies on 2,000 images; robustness on 40 images, one
    attack, correct masks drawn at random."""
    acc = root / "cache" / "acc" / "resnet20"
    acc.mkdir(parents=True)
    json.dump({"model": "resnet20", "layers": ["layer3.2", "pool"], "key_dim": 4160,
               "test_mode": "exact", "k": None, "theta": 70, "lam": 0.2, "theta_cache_only": 30,
               "n_test": 2000, "baseline_test_accuracy": 0.9005, "cache_test_accuracy": 0.9115,
               "cache_only_test_accuracy": 0.8995,
               **{g: {"gain": 0.011, "lo": 0.004, "hi": 0.018, "n": 2000}
                  for g in ("gain_cache", "gain_cache_only")}}, (acc / "results.json").open("w"))
    rng = np.random.default_rng(0)
    folder = root / "cache" / "robust" / "tiny"
    folder.mkdir(parents=True)
    masks = {f"{k}/{c}": rng.random(40) < p for k, p in (("clean", 0.9), ("pgd8", 0.3))
             for c in ("baseline", "cache", "cache_only")}
    np.savez(folder / "robust_correct.npz", **masks)
    rate = {c: float(masks[f"pgd8/{c}"].mean()) for c in ("baseline", "cache", "cache_only")}
    json.dump({"n": 40, "eval_mode": "exact", "k": None, "theta": 70, "lam": 0.2,
               "theta_cache_only": 30, "surrogate_theta": 10,
               "clean": {c: float(masks[f"clean/{c}"].mean()) for c in rate},
               "attacks": [{"attack": "pgd", "steps": 10, "crafted_on": "baseline",
                            "label": "pgd8", "eps": 8 / 255, "seconds": 1.0, **rate}]},
              (folder / "robust.json").open("w"))
    return root / "cache"


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[str]]]:
    """Per kind: the page and the texts that must be visible on it."""
    from advimage.eval.report_run import write_report
    from advimage.studies.cache.report import build_report as cache_report
    from advimage.studies.cache.report_html import write_html as cache_html
    from advimage.studies.detection.report import write_report as detection_report
    from advimage.studies.distill.report import build_report as distill_report
    from advimage.studies.distill.report_html import write_html as distill_html
    from advimage.studies.nim.report_html import write_html as nim_html

    root = tmp_path_factory.mktemp("render")
    a, b = _tiny_run(root, "a"), _tiny_run(root, "b")
    out = {"run": (write_report(a), [])}
    res = json.loads((a / "results.json").read_text())["results"]
    out["run"][1].extend(wilson(round(r["robust_accuracy"] * r["n"]), r["n"]) for r in res)
    out["run"][1].append("8/255")
    assert main(["compare", str(a), str(b), "--out", str(root / "cmp")]) == 0
    clean = res[0]
    out["compare"] = (root / "cmp" / "compare.html",
                      [wilson(round(clean["clean_accuracy"] * clean["n"]), clean["n"]), "8/255"])
    det = root / "det"
    detection_report(ROOT / "reports/detection/data/resnet20", det, plots=("white-pgd@0.03137",),
                     html=True)  # committed run: 181 of 200 test images correct
    out["detection"] = (det / "report.html", ["white-pgd@8/255", "99.4% [96.9, 99.9]"])
    runs = _cache_runs(root)
    masks = np.load(runs / "robust/tiny/robust_correct.npz")
    cache_out = root / "cache-report"
    cache_out.mkdir()
    cache_html(cache_report(runs, cache_out, ["tiny"]), runs, cache_out, ["tiny"])
    ci = binomtest(1823, 2000).proportion_ci(0.95, method="wilson")  # cache: 91.15% of 2000
    out["cache"] = (cache_out / "report.html",
                    [wilson(int(masks["pgd8/cache_only"].sum()), 40),
                     f"91.15% [{100 * ci.low:.2f}, {100 * ci.high:.2f}]"])
    dist = root / "distill"
    distill_report(ROOT / "reports/distill/data/transfer", dist,
                   train_runs=[ROOT / "reports/distill/data/train"])
    distill_html(dist)
    out["distill"] = (dist / "report.html",  # jitter-teacher's KD agrees on 1798 of 2000
                      ["Adversarial vulnerability", "2/255", wilson(1798, 2000)])
    nim = root / "nim"
    shutil.copytree(ROOT / "reports/nim", nim, ignore=shutil.ignore_patterns("data", "*.py"))
    nim_html(nim)
    out["nim"] = (nim / "report.html", [wilson(209, 300), "8/255"])  # none: clean 69.7% of 300
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_page_renders_without_errors_and_shows_key_numbers(pages, kind, tmp_path) -> None:
    path, needles = pages[kind]
    page = load(path, tmp_path)
    assert page.errors == 0, page.messages
    assert page.images >= 1 and page.broken == 0, f"{page.broken} of {page.images} broken"
    text = page.text()
    assert "How to read this" in text
    for needle in needles:
        assert needle in text, needle
    assert str(ROOT) not in page.dom and str(tmp_path) not in page.dom  # no machine paths
    assert 'class="sortable"' in page.dom and "https://" not in page.dom


@pytest.mark.parametrize("kind", KINDS)
def test_screenshot(pages, kind, tmp_path) -> None:
    keep = os.environ.get("ADVIMAGE_SCREENSHOTS")
    shot = screenshot(pages[kind][0], tmp_path / f"{kind}.png", tmp_path)
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (900, 1200)
    assert (img < 240).any(axis=2).mean() > 0.02  # not a blank page
    if keep:
        Image.open(shot).convert("RGB").quantize(64).save(Path(keep) / f"{kind}.png",
                                                          optimize=True)


def test_run_probe_catches_a_broken_image(tmp_path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head></head><body><img src="missing.png">'
                   "<script>console.error('boom')</script></body></html>", encoding="utf-8")
    page = load(bad, tmp_path)
    assert page.broken == 1 and page.errors >= 1 and "boom" in page.messages
