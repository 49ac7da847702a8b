"""One-off converter: a detection run folder of the old per-file harness -> the SQLite store.

Before the detection study ran through the eval harness (:mod:`advimage.eval.detection`),
``advimage eval detection`` wrote ``calibration.pt``, ``clean.pt``, ``attack-NAME.pt`` and
``results.json`` (Hu, Yu et al., NeurIPS 2019, the noise-signature detector). :func:`convert`
writes the same scores, predictions, labels and timings as a detection store
(``results.sqlite``) so the report rebuilds from it; the attacks' and detector's descriptions
come from the run's config file. Run as ``python -m advimage.studies.detection.convert OLD
CONFIG NEW``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from advimage.eval.detection import KIND, DetectionAttack, attack_rows
from advimage.eval.detection_store import CALIBRATION, TEST, ScoredSet, unit_of, write_set
from advimage.eval.store import DB_NAME, ResultStore
from advimage.studies.detection.config import attack_specs, detector_spec, read_config

__all__ = ["convert"]


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _set(rec: dict[str, Any], y: torch.Tensor, attack: bool) -> ScoredSet:
    scores = {k: v.double() for k, v in rec["scores"].items()}
    if attack:
        return ScoredSet(y, rec["pred"], scores, rec.get("seconds_attack"),
                         rec.get("seconds_score"))
    return ScoredSet(rec["y"], rec["pred"], scores, None, rec.get("seconds"))


def convert(old: str | Path, config: str | Path, new: str | Path) -> Path:
    """Convert run folder ``old`` (of detection config ``config``) into store folder ``new``."""
    old, new = Path(old), Path(new)
    res = json.loads((old / "results.json").read_text(encoding="utf-8"))
    if res.get("pending"):
        raise ValueError(f"{old}: results.json lists pending attacks {res['pending']}")
    raw, _ = read_config(config)
    specs = attack_specs(raw.get("attacks") or [])
    names = list(res["attacks"])
    missing = [n for n in names if n not in specs]
    if missing:
        raise ValueError(f"{config} does not describe attack {missing[0]!r} of {old}")
    attacks = {n: DetectionAttack(_never, specs[n]["kind"], specs[n]["eps"],
                                  specs[n]["options"]) for n in names}
    meta = {"kind": KIND, "n_batches": unit_of(len(names)), "classes": [],
            "detection": {"fprs": res["fprs"], "fingerprint": res.get("fingerprint"),
                          "detector": detector_spec(raw.get("detector")),
                          "criteria": res["criteria"]}}
    new.mkdir(parents=True, exist_ok=True)
    db = new / DB_NAME
    if db.exists():
        raise ValueError(f"{db} exists; remove it to convert again")
    with ResultStore(db, create=True) as store:
        store.initialize(meta, attack_rows(attacks), [])
        session = store.new_session()
        cal, clean = _load(old / "calibration.pt"), _load(old / "clean.pt")
        write_set(store, CALIBRATION, session, "calibration", "", _set(cal, cal["y"], False))
        write_set(store, TEST, session, "test", "", _set(clean, clean["y"], False))
        for i, name in enumerate(names):
            rec = _load(old / f"attack-{name}.pt")
            write_set(store, unit_of(i), session, "test", name, _set(rec, clean["y"], True))
        store.mark_finished(unit_of(len(names)))
        store.conn.execute("VACUUM")
    return db


def _never(calib: Any) -> Any:
    raise ValueError("a converted detection run holds finished attacks only")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path, help="old run folder (calibration.pt, ..., results.json)")
    ap.add_argument("config", type=Path, help="the detection config it was run with")
    ap.add_argument("new", type=Path, help="folder for results.sqlite")
    a = ap.parse_args()
    sys.stdout.write(f"{convert(a.old, a.config, a.new)}\n")
