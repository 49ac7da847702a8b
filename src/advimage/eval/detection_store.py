"""The detection run kind's rows in the result store (``results.sqlite``).

A detection run (the study of Hu, Yu et al., NeurIPS 2019, "A New Defense Against Adversarial
Images: Turning a Weakness into a Strength", for any registered detector) stores one *batch*
per scored set of images: batch 0 the clean calibration images, batch 1 the clean test images,
batch ``2 + k`` the adversarial images of attack ``k`` (the store's ``attacks`` table, in
config order). Each batch is one transaction of its ``detection_units`` row (split, attack,
seconds), one ``detection_samples`` row per image (label, prediction) and one
``detection_scores`` row per image and criterion, sealed by the batch digest that
:func:`advimage.eval.store_check.verify_store` checks, exactly as an evaluation run's batches.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from advimage.detect.metrics import summarize
from advimage.eval.store import ResultStore
from advimage.eval.store_check import AGGREGATE, batch_digests

__all__ = ["CALIBRATION", "TEST", "DetectionView", "ScoredSet", "detection_results",
           "read_detection", "read_sets", "store_criteria", "unit_of", "write_set"]

log = logging.getLogger(__name__)

CALIBRATION, TEST = 0, 1  # batch indices of the clean sets; attack k is batch 2 + k


def unit_of(position: int) -> int:
    """The batch index of the attack at ``position`` in the ``attacks`` table."""
    return 2 + position


@dataclass
class ScoredSet:
    """One scored set of images: labels, predictions and criterion scores, all ``(N,)``."""

    y: Tensor
    pred: Tensor
    scores: dict[str, Tensor]
    seconds_attack: float | None = None
    seconds_score: float | None = None

    def as_record(self) -> dict[str, object]:
        """The mapping :func:`advimage.detect.metrics.summarize` reads."""
        return {"scores": self.scores, "pred": self.pred, "y": self.y,
                "seconds_attack": self.seconds_attack, "seconds_score": self.seconds_score}


def write_set(store: ResultStore, batch: int, session: int, split: str, attack: str,
              data: ScoredSet) -> bool:
    """Store one scored set as batch ``batch`` in one transaction (all of it or nothing).

    Returns:
        False, storing nothing, when another process (another ``--shard``) stored it first.
    """
    n = len(data.y)
    samples = list(zip([batch] * n, range(n), data.y.tolist(), data.pred.tolist(), strict=True))
    scores = [(batch, k, i, float(v)) for k, col in data.scores.items()
              for i, v in enumerate(col.double().tolist())]
    try:
        with store.conn as c:
            c.execute("INSERT INTO batches VALUES (?, ?, ?, NULL, NULL)", (batch, n, session))
            c.execute("INSERT INTO detection_units VALUES (?, ?, ?, ?, ?)",
                      (batch, split, attack, data.seconds_attack, data.seconds_score))
            c.executemany("INSERT INTO detection_samples VALUES (?, ?, ?, ?)", samples)
            c.executemany("INSERT INTO detection_scores VALUES (?, ?, ?, ?)", scores)
            rows, digest = batch_digests(c, batch)[batch]
            c.execute("UPDATE batches SET rows = ?, digest = ? WHERE batch = ?",
                      (rows, digest, batch))
            c.execute(AGGREGATE)
    except sqlite3.IntegrityError:
        if batch not in store.done_batches():
            raise
        log.warning("detection batch %d was already stored by another process", batch)
        return False
    return True


def read_sets(store: ResultStore) -> dict[int, ScoredSet]:
    """Every stored scored set by batch index (scores as float64 tensors)."""
    conn = store.conn
    out: dict[int, ScoredSet] = {}
    for b, sa, ss in conn.execute("SELECT batch, seconds_attack, seconds_score "
                                  "FROM detection_units ORDER BY batch"):
        rows = conn.execute("SELECT label, pred FROM detection_samples WHERE batch = ? "
                            "ORDER BY sample", (b,)).fetchall()
        y = torch.tensor([r[0] for r in rows], dtype=torch.long)
        pred = torch.tensor([r[1] for r in rows], dtype=torch.long)
        out[b] = ScoredSet(y, pred, _scores(conn, b), sa, ss)
    return out


def _scores(conn: sqlite3.Connection, batch: int) -> dict[str, Tensor]:
    cols: dict[str, list[float]] = {}
    for k, v in conn.execute("SELECT criterion, score FROM detection_scores WHERE batch = ? "
                             "ORDER BY criterion, sample", (batch,)):
        cols.setdefault(k, []).append(v)
    order = store_criteria(conn) or sorted(cols)
    return {k: torch.tensor(cols[k], dtype=torch.float64) for k in order if k in cols}


def store_criteria(conn: sqlite3.Connection) -> list[str]:
    """The criteria of a detection run, in the detector's order (``meta`` ``detection``)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'detection'").fetchone()
    return list(json.loads(row[0]).get("criteria", [])) if row is not None else []


@dataclass
class DetectionView:
    """A detection run read back: the clean sets, attack sets by name, and the run's setup."""

    info: dict[str, object]
    calibration: ScoredSet | None
    test: ScoredSet | None
    attacks: list[str]
    attack_sets: dict[str, ScoredSet]

    def clean_scores(self) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
        """Scores of the correctly classified calibration and test images, and the test mask."""
        if self.calibration is None or self.test is None:
            raise ValueError("the clean images of this detection run are not scored yet")
        ok_cal = self.calibration.pred == self.calibration.y
        ok = self.test.pred == self.test.y
        calib = {k: v[ok_cal] for k, v in self.calibration.scores.items()}
        return calib, {k: v[ok] for k, v in self.test.scores.items()}, ok


def read_detection(store: ResultStore) -> DetectionView:
    """Everything a detection run has stored so far (a partial run gives what it has)."""
    sets = read_sets(store)
    names = [r[0] for r in store.conn.execute("SELECT attack FROM attacks ORDER BY position")]
    attack_sets = {n: sets[unit_of(i)] for i, n in enumerate(names) if unit_of(i) in sets}
    info = store.get_meta("detection", {})
    return DetectionView(info, sets.get(CALIBRATION), sets.get(TEST), names, attack_sets)


def detection_results(view: DetectionView) -> dict[str, Any]:
    """The run's summary (``results.json``): per attack its success and detection rates at
    the target FPRs per criterion and combined, and AUCs (:func:`summarize`); ``pending``
    lists the attacks not stored yet (other shards')."""
    info = view.info
    fprs = [float(f) for f in info.get("fprs", [])]  # type: ignore[attr-defined]
    out: dict[str, Any] = {k: info.get(k) for k in ("criteria", "detector")}
    out.update({"fprs": fprs, "fingerprint": info.get("fingerprint"), "attacks": {},
                "pending": [n for n in view.attacks if n not in view.attack_sets]})
    if view.calibration is None or view.test is None:
        return out
    calib, clean, ok = view.clean_scores()
    out.update({"n_calibration": len(view.calibration.y), "n_calibration_correct":
                int(next(iter(calib.values())).numel()), "n_test": len(view.test.y),
                "n_test_correct": int(ok.sum())})
    for name in view.attacks:
        if name in view.attack_sets:
            rec = view.attack_sets[name].as_record()
            out["attacks"][name] = summarize(calib, clean, rec, ok, view.test.y, fprs)
    return out
