"""A three-batch run for the result-store tests, and how to compare two runs' results."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import torch
import yaml
from harness_helpers import tiny_config

from advimage.cli import main
from advimage.eval.config import load_config
from advimage.eval.runner import run_evaluation

N_BATCHES = 3


def store_config() -> dict[str, Any]:
    """12 digits in 3 batches of 4; FGSM, the unbounded check, gradients and a detector, so
    every table of the store has rows."""
    return tiny_config(
        data={"name": "digits", "split": "test", "limit": 12, "batch_size": 4},
        attacks=[{"name": "fgsm", "eps": [0.1]}], detectors=["msp"], examples=0,
        checks={"unbounded_steps": 3})


def cli(*args: str) -> int:
    return main([*args, "--no-progress", "--device", "cpu", "--threads", "1"])


def rows(db: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(str(db))
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def dump(run: Path) -> dict[str, Any]:
    """Everything a run's results are made of (timings excepted: they are wall-clock)."""
    db = run / "results.sqlite"
    doc = json.loads((run / "results.json").read_text(encoding="utf-8"))
    results = {k: doc[k] for k in ("results", "findings", "partial")}
    for r in results["results"]:
        r.pop("seconds")
    with open(run / "samples.csv", newline="", encoding="utf-8") as fh:
        samples_csv = list(csv.DictReader(fh))
    return {
        "samples": rows(db, "SELECT * FROM samples ORDER BY defense, attack, sample"),
        "scores": rows(db, "SELECT * FROM detector_scores ORDER BY defense, attack, sample"),
        "gradients": rows(db, "SELECT * FROM gradients ORDER BY batch, defense"),
        "results": rows(db, "SELECT defense, attack, n, clean_accuracy, robust_accuracy, "
                            "mean_distance FROM results ORDER BY defense, attack"),
        "batches": rows(db, "SELECT batch, n FROM batches ORDER BY batch"),
        "results.json": results,
        "samples.csv": samples_csv,
    }


def build_runs(root: Path) -> tuple[Path, Path, Path]:
    """(config file, finished run, interrupted run) under ``root``.

    The interrupted run is what ``kill -9`` after batch 1 leaves: a copy of the live folder
    (``results.sqlite`` with its ``-wal`` and ``-shm``) taken while the run is still open.
    Batch 0 was checkpointed into the database file, batch 1 is only in the WAL.
    """
    n = torch.get_num_threads()
    try:
        cfg = root / "cfg.yaml"
        cfg.write_text(yaml.safe_dump(store_config()), encoding="utf-8")
        whole = root / "whole"
        assert cli("run", str(cfg), "--out", str(whole)) == 0
        live, killed = root / "live", root / "killed"

        def on_batch(b: int) -> None:
            if b == 0:
                con = sqlite3.connect(str(live / "results.sqlite"))
                con.execute("PRAGMA wal_checkpoint(FULL)")
                con.close()
            else:
                shutil.copytree(live, killed)
                raise KeyboardInterrupt

        try:
            run_evaluation(load_config(cfg), live, device="cpu", on_batch=on_batch)
        except KeyboardInterrupt:
            pass
        assert (killed / "results.sqlite-wal").stat().st_size > 0
    finally:
        torch.set_num_threads(n)
    return cfg, whole, killed
