"""``advimage run`` end to end: run directory contents, resume of a finished run, and the
shipped quick config on the reference ResNet-20 (needs ../shared)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from harness_helpers import tiny_config

from advimage.cli import main
from advimage.eval.checks import run_checks
from advimage.eval.store import ResultStore

REPO = Path(__file__).resolve().parents[2]


def test_cli_run_writes_metadata_and_resumes_finished_run(tmp_path, write_config, capsys):
    cfg = write_config(tiny_config(attacks=[{"name": "fgsm", "eps": [0.1]}]))
    run = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(run), "--no-progress", "--seed", "3"]) == 0
    assert "report" in capsys.readouterr().out
    meta = json.loads((run / "run.json").read_text())
    for key in ("advimage_version", "git_hash", "torch_version", "device", "seed"):
        assert key in meta
    assert meta["seed"] == 3 and meta["device"] == "cpu"
    assert meta["model_source"] == "bundled:small-cnn-digits"  # where the model came from
    config = json.loads((run / "config.json").read_text())
    assert config["seed"] == 3 and config["model"] == {"path": "bundled"}
    assert config["attacks"][0]["eps"] == 0.1 and config["data"]["limit"] == 20
    with ResultStore(run / "results.sqlite") as store:
        before = store.samples()
        assert store.get_meta("finished") is True
    assert main(["run", "--resume", str(run), "--no-progress", "--seed", "3"]) == 0
    with ResultStore(run / "results.sqlite") as store:
        assert store.samples() == before  # nothing left to do, nothing recomputed
        assert {b["session"] for b in store.conn.execute("SELECT session FROM batches")} == {1}


@pytest.mark.slow
@pytest.mark.shared
def test_quick_resnet20_config(shared_models, cifar10_root, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    run = tmp_path / "rn20"
    assert main(["run", "configs/robust-resnet20-quick.yaml", "--out", str(run),
                 "--device", "cpu", "--no-progress"]) == 0
    with ResultStore(run / "results.sqlite") as store:
        rows = {r["attack"]: r for r in store.results()}
        findings = run_checks(list(rows.values()), store.defenses(), store.gradients())
    assert rows["fgsm@0.00784314"]["clean_accuracy"] >= 0.8  # 91.7% on the full test split
    acc = [rows[f"pgd@{e / 255:.6g}"]["robust_accuracy"] for e in (2, 4, 8)]
    assert acc == sorted(acc, reverse=True) and acc[-1] <= 0.1  # undefended: PGD wins
    assert rows["apgd-ce@0.0313725"]["robust_accuracy"] <= 0.1
    assert rows["unbounded-pgd@1"]["robust_accuracy"] == 0.0
    assert findings == []  # a healthy undefended model shows no masking symptom
