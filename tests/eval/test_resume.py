"""A run killed with SIGKILL resumes without recomputing finished batches and ends identical.

The killed run is a real ``advimage run`` subprocess; it is killed as soon as the SQLite store
shows a few committed batches, then continued with ``advimage run --resume``. Every stored row
(samples, detector scores, gradient statistics, aggregates) and the example tensors must equal
those of an uninterrupted run with the same seed.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness_helpers import tiny_config

from advimage.eval.config import load_config
from advimage.eval.runner import batch_seed, run_evaluation

N_IMAGES = 60
BATCH = 4  # 15 batches: the kill lands mid-run


def _config() -> dict:
    return tiny_config(
        data={"name": "digits", "split": "test", "limit": N_IMAGES, "batch_size": BATCH},
        attacks=[
            {"name": "fgsm", "eps": [0.1]},
            # random start + several steps: a wrong per-batch seed would change the rows
            {"name": "pgd", "eps": [0.1], "options": {"steps": 8}},
        ],
        defenses=["none", {"name": "gaussian-noise", "options": {"sigma": 0.05}}],
        detectors=["msp"],
        examples=3,
    )


def _rows(db: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(str(db))
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _dump(run: Path) -> dict[str, list[tuple]]:
    db = run / "results.sqlite"
    return {
        "samples": _rows(db, "SELECT * FROM samples ORDER BY defense, attack, sample"),
        "scores": _rows(db, "SELECT * FROM detector_scores ORDER BY defense, attack, sample"),
        "gradients": _rows(db, "SELECT * FROM gradients ORDER BY batch, defense"),
        "results": _rows(db, "SELECT defense, attack, n, clean_accuracy, robust_accuracy, "
                             "mean_distance FROM results ORDER BY defense, attack"),
    }


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "advimage.cli", *args, "--device", "cpu", "--threads", "1",
            "--no-progress"]


def test_batch_seed_depends_on_every_part() -> None:
    s = batch_seed(0, 3, "none", "pgd@0.1")
    assert s == batch_seed(0, 3, "none", "pgd@0.1") and 0 <= s < 2**63
    others = {batch_seed(1, 3, "none", "pgd@0.1"), batch_seed(0, 4, "none", "pgd@0.1"),
              batch_seed(0, 3, "noise", "pgd@0.1"), batch_seed(0, 3, "none", "pgd@0.2")}
    assert s not in others and len(others) == 4


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, write_config) -> None:
    cfg_path = write_config(_config())
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_cli("run", str(cfg_path), "--out", str(killed)), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db = killed / "results.sqlite"
    n_batches = -(-N_IMAGES // BATCH)
    done_at_kill = 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists():
                try:
                    done_at_kill = _rows(db, "SELECT COUNT(*) FROM batches")[0][0]
                except sqlite3.OperationalError:  # schema not created yet
                    done_at_kill = 0
                if done_at_kill >= 3:
                    proc.send_signal(signal.SIGKILL)
                    break
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done = _rows(db, "SELECT batch, n FROM batches")
    assert 3 <= len(done) < n_batches
    # all-or-nothing batches: exactly the committed batches have rows (2 defenses x 3 attacks)
    n_samples = _rows(db, "SELECT COUNT(*) FROM samples")[0][0]
    assert n_samples == sum(n for _, n in done) * 2 * 3

    res = subprocess.run(_cli("run", "--resume", str(killed)), env=env, capture_output=True,
                         text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    sessions = dict(_rows(db, "SELECT batch, session FROM batches"))
    assert len(sessions) == n_batches
    # batches committed before the kill were not recomputed by the resumed process
    assert all(sessions[b] == 1 for b, _ in done)
    assert sorted(b for b, s in sessions.items() if s == 2) == sorted(
        set(range(n_batches)) - {b for b, _ in done})

    whole = tmp_path / "whole"
    run_evaluation(load_config(cfg_path), whole, device="cpu")
    a, b = _dump(killed), _dump(whole)
    for table in a:
        assert a[table] == b[table], table
    assert len(a["samples"]) == N_IMAGES * 2 * 3
    for name in ("none", "gaussian-noise"):
        ex = Path("examples") / f"{name}.safetensors"
        assert (killed / ex).read_bytes() == (whole / ex).read_bytes()
    assert (killed / "report.html").exists()


def test_resume_refuses_a_changed_config(tmp_path, write_config) -> None:
    cfg = load_config(write_config(tiny_config(
        data={"name": "digits", "limit": 10, "batch_size": 10},
        attacks=[{"name": "fgsm", "eps": [0.1]}], checks={"enabled": False})))
    run_evaluation(cfg, tmp_path / "r", device="cpu")
    with pytest.raises(ValueError, match="already holds results"):
        run_evaluation(cfg, tmp_path / "r", device="cpu")
    cfg.seed = 1
    with pytest.raises(ValueError, match="config differs"):
        run_evaluation(cfg, tmp_path / "r", device="cpu", resume=True)
