"""The committed detection report data (reports/detection/data/*) back the committed tables.

Each folder holds a run's scores and predictions (its adversarial images dropped). The per-attack
summaries are recomputed from those scores and must equal the run's results.json, and the report
script must rebuild the committed tables-*.md from them exactly, so the numbers in
reports/detection/README.md trace back to stored scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from advimage.detect.metrics import summarize

REPORT = Path(__file__).resolve().parents[2] / "reports" / "detection"
RUNS = {"resnet20": "tables.md", "resnet20-testcal": "tables-testcal.md",
        "vgg19": "tables-vgg19.md", "imagenet-effnet": "tables-imagenet-effnet.md"}
N_ATTACKS = {"resnet20": 14, "resnet20-testcal": 14, "vgg19": 14, "imagenet-effnet": 11}


def _close(a, b) -> bool:  # noqa: ANN001
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, rel=1e-9, abs=1e-12)
    return a == b


@pytest.mark.parametrize("run", sorted(RUNS))
def test_summaries_recompute_from_the_stored_scores(run: str) -> None:
    d = REPORT / "data" / run
    res = json.loads((d / "results.json").read_text())
    cal = torch.load(d / "calibration.pt", weights_only=True)
    clean = torch.load(d / "clean.pt", weights_only=True)
    ok_cal, ok = cal["pred"] == cal["y"], clean["pred"] == clean["y"]
    assert int(ok_cal.sum()) == res["n_calibration_correct"]
    assert int(ok.sum()) == res["n_test_correct"]
    calib = {k: v[ok_cal] for k, v in cal["scores"].items()}
    clean_s = {k: v[ok] for k, v in clean["scores"].items()}
    assert len(res["attacks"]) == N_ATTACKS[run]
    for name, stored in res["attacks"].items():
        rec = torch.load(d / f"attack-{name}.pt", weights_only=True)
        assert "x_adv" not in rec  # the adversarial images are not committed
        again = summarize(calib, clean_s, rec, ok, clean["y"], res["fprs"])
        assert _close(json.loads(json.dumps(again)), stored), name


@pytest.mark.parametrize("run", sorted(RUNS))
def test_report_script_rebuilds_the_committed_tables(run: str, tmp_path, monkeypatch,
                                                    report_script) -> None:
    script = report_script("detection")
    monkeypatch.setattr(script, "HERE", tmp_path)
    suffix = RUNS[run].removeprefix("tables").removeprefix("-").removesuffix(".md")
    script.main(REPORT / "data" / run, suffix, plots=False)
    assert (tmp_path / RUNS[run]).read_text() == (REPORT / RUNS[run]).read_text()
