"""The committed detection report data (reports/detection/data/*) back the committed tables.

Each folder holds a run's SQLite store (scores, predictions and labels; its adversarial images
dropped), converted from the per-file format of the harness before issue 15. The store must
pass the harness's integrity check, hold every attack of the run, and the report script must
rebuild the committed tables-*.md from it exactly, so the numbers in reports/detection/README.md
trace back to stored scores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from advimage.eval.detection_store import detection_results, read_detection
from advimage.eval.store import DB_NAME, ResultStore

REPORT = Path(__file__).resolve().parents[2] / "reports" / "detection"
RUNS = {"resnet20": "tables.md", "resnet20-testcal": "tables-testcal.md",
        "vgg19": "tables-vgg19.md", "imagenet-effnet": "tables-imagenet-effnet.md"}
N_ATTACKS = {"resnet20": 14, "resnet20-testcal": 14, "vgg19": 14, "imagenet-effnet": 11}


@pytest.mark.parametrize("run", sorted(RUNS))
def test_stores_are_complete_and_verified(run: str) -> None:
    with ResultStore(REPORT / "data" / run / DB_NAME) as store:  # integrity check on open
        assert store.progress()["partial"] is False
        res = detection_results(read_detection(store))
    assert len(res["attacks"]) == N_ATTACKS[run] and res["pending"] == []
    assert res["criteria"] == ["c1", "c2t"]


@pytest.mark.parametrize("run", sorted(RUNS))
def test_report_script_rebuilds_the_committed_tables(run: str, tmp_path, monkeypatch,
                                                    report_script) -> None:
    script = report_script("detection")
    monkeypatch.setattr(script, "HERE", tmp_path)
    suffix = RUNS[run].removeprefix("tables").removeprefix("-").removesuffix(".md")
    script.main(REPORT / "data" / run, suffix, plots=False)
    assert (tmp_path / RUNS[run]).read_text() == (REPORT / RUNS[run]).read_text()
