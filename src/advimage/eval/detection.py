"""The detection run kind of the evaluation harness: a detector against attacks, resumable.

Runs the evaluation of Hu, Yu et al. (NeurIPS 2019), "A New Defense Against Adversarial
Images: Turning a Weakness into a Strength", for any registered detector
(:class:`advimage.detect.base.Detector`): score clean held-out *calibration* images and clean
*test* images, then craft every attack on the test images and score its output. Each scored set
is one batch of the run directory's SQLite store (:mod:`advimage.eval.detection_store`), so the
harness's guarantees hold as for ``advimage run``: a killed run resumes with the finished sets
kept, ``shard=(i, n)`` (``--shard I/N``) lets n processes share the folder (each crafts every
n-th attack; the clean sets are scored by whichever gets there first), the store's integrity
check refuses a damaged store, and the folder's manifest (:mod:`advimage.rundir`) binds it to
one resolved configuration. Attacks run with their own seeds, in config order, exactly as
before the harness was shared, so stored scores are unchanged. ``results.json`` (rates at FPRs
and AUCs, :func:`advimage.eval.detection_store.detection_results`) is rewritten after every set.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from advimage.attacks.base import model_dtype_device
from advimage.detect.base import Detector
from advimage.detect.metrics import DEFAULT_FPRS
from advimage.eval.detection_store import (
    CALIBRATION,
    TEST,
    ScoredSet,
    detection_results,
    read_detection,
    unit_of,
    write_set,
)
from advimage.eval.store import DB_NAME, ResultStore
from advimage.rundir import open_run_dir
from advimage.utils import write_json
from advimage.validation import check_shard

__all__ = ["KIND", "DetectionAttack", "DetectionJob", "attack_rows", "run_detection",
           "tensor_digest"]

log = logging.getLogger(__name__)

KIND = "detection"  # the run kind recorded in the manifest and the store
RESULTS_NAME = "results.json"
# what an advimage before the shared harness wrote: such a folder is refused, never resumed
_LEGACY = ("calibration.pt", "clean.pt", "attack-*.pt", "results.json", DB_NAME)
_PREDICT_BATCH = 256  # images per prediction forward

AttackFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class DetectionAttack:
    """One attack of a detection run: ``factory(calibration scores) -> attack(model, x, y)``
    (a white-box attacker may read the calibrated thresholds) and what describes it."""

    factory: Callable[[Mapping[str, Tensor]], AttackFn]
    kind: str
    eps: float
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DetectionJob:
    """Everything one detection run needs (built by :mod:`advimage.studies.detection`).

    Args:
        model: The classifier (images in [0, 1] -> logits).
        detector: The detector; every criterion of ``criterion_scores`` is evaluated.
        calibration: Clean held-out ``(x, y)``; thresholds come from these only.
        test: Clean evaluation ``(x, y)``; the attacks start from these.
        attacks: name -> attack, in run order.
        fprs: Target false-positive rates.
        batch_size: Images attacked at once.
        source: What the arguments cannot tell (paths, the detector's name and options).
    """

    model: nn.Module
    detector: Detector
    calibration: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    attacks: Mapping[str, DetectionAttack]
    fprs: Sequence[float] = DEFAULT_FPRS
    batch_size: int = 100
    source: Mapping[str, Any] = field(default_factory=dict)


def tensor_digest(*tensors: Tensor) -> str:
    """sha256 over the shapes, dtypes and bytes of ``tensors`` (CPU copies)."""
    h = hashlib.sha256()
    for t in tensors:
        flat = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{flat.dtype}|{tuple(t.shape)}|".encode())
        h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _weights_digest(model: nn.Module) -> str | None:
    fp = getattr(model, "fingerprint", None)
    if callable(fp):
        return str(fp())
    state = sorted(model.state_dict().items())
    return tensor_digest(*(t for _, t in state)) if state else None


def _resolved(job: DetectionJob) -> dict[str, Any]:
    """The manifest's configuration: everything that changes the stored results."""
    return {
        "model": {"arch": str(getattr(job.model, "arch", type(job.model).__name__)),
                  "fingerprint": _weights_digest(job.model)},
        "calibration": {"n": len(job.calibration[0]), "sha256": tensor_digest(*job.calibration)},
        "test": {"n": len(job.test[0]), "sha256": tensor_digest(*job.test)},
        "fprs": [float(f) for f in job.fprs], "batch_size": int(job.batch_size),
        "source": dict(job.source),
    }


def attack_rows(attacks: Mapping[str, DetectionAttack]) -> list[dict[str, Any]]:
    """The store's ``attacks`` rows of a detection run (one per attack, in run order)."""
    return [{"attack": name, "name": a.kind, "label": name.rsplit("@", 1)[0], "kind": KIND,
             "norm": "linf", "eps": a.eps, "options": json.dumps(a.options, sort_keys=True),
             "steps": a.options.get("steps"), "restarts": None, "eot": a.options.get("eot"),
             "position": i} for i, (name, a) in enumerate(attacks.items())]


def _open_store(db: Path, meta: Mapping[str, Any], attacks: list[dict[str, Any]]) -> ResultStore:
    """Open the run's store, creating it sealed first if needed (atomically: processes that
    start together all open the one store the first of them linked into place)."""
    if not db.exists():
        fd, tmp = tempfile.mkstemp(dir=db.parent, prefix=".results.", suffix=".sqlite")
        os.close(fd)
        os.unlink(tmp)
        try:
            with ResultStore(tmp, create=True) as fresh:
                fresh.initialize(meta, attacks, [])
            with contextlib.suppress(FileExistsError):
                os.link(tmp, db)
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(tmp + suffix).unlink(missing_ok=True)
    return ResultStore(db)


def _on_device(job: DetectionJob, x: Tensor) -> Tensor:
    return x.to(model_dtype_device(job.model, x)[1])


def _score_set(job: DetectionJob, x: Tensor, y: Tensor,
               seconds_attack: float | None = None) -> ScoredSet:
    """Criterion scores (the whole set in one call) and predictions of images ``x``."""
    t0 = time.time()
    xd = _on_device(job, x)
    scores = {k: v.detach().cpu() for k, v in job.detector.criterion_scores(xd).items()}
    with torch.no_grad():
        pred = torch.cat([job.model(xd[i : i + _PREDICT_BATCH]).argmax(1).cpu()
                          for i in range(0, len(xd), _PREDICT_BATCH)])
    return ScoredSet(y.cpu(), pred, scores, seconds_attack, time.time() - t0)


def _attack_set(job: DetectionJob, name: str, calib: Mapping[str, Tensor]) -> ScoredSet:
    """Craft attack ``name`` on the test images in batches and score its output."""
    x_test, y_test = job.test
    attack = job.attacks[name].factory(calib)
    bs = job.batch_size
    t0 = time.time()
    dev = model_dtype_device(job.model, x_test)[1]  # attacks compute where the model lives
    x_adv = torch.cat([attack(job.model, x_test[i : i + bs].to(dev), y_test[i : i + bs].to(dev))
                       .cpu() for i in range(0, len(x_test), bs)])
    t_attack = time.time() - t0
    out = _score_set(job, x_adv, y_test, t_attack)
    log.info("attack %s: %.0f s, scoring %.0f s", name, t_attack, out.seconds_score)
    return out


def _clean_sets(store: ResultStore, session: int, job: DetectionJob) -> None:
    """Score the calibration and test images unless stored (by this or another process)."""
    for batch, split, (x, y) in ((CALIBRATION, "calibration", job.calibration),
                                 (TEST, "test", job.test)):
        if batch not in store.done_batches():
            write_set(store, batch, session, split, "", _score_set(job, x, y))


def _publish(store: ResultStore, out: Path) -> dict[str, Any]:
    results = detection_results(read_detection(store))
    write_json(out / RESULTS_NAME, results)  # atomic; other shards rewrite it too
    return results


def run_detection(job: DetectionJob, out_dir: str | Path,
                  shard: tuple[int, int] | None = None) -> dict[str, Any]:
    """Score the clean sets, then craft and score every attack of ``job`` into ``out_dir``.

    Returns:
        The summary also written to ``results.json``; ``pending`` lists the attacks not
        stored yet (other shards'); the shard that ends last writes the complete one.

    Raises:
        ValueError: a bad ``shard``.
        ConfigMismatchError: ``out_dir`` holds results of another configuration.
        CorruptFileError: a damaged store or manifest.
    """
    check_shard(shard)
    run = open_run_dir(out_dir, KIND, _resolved(job), legacy=_LEGACY)
    criteria = list(job.detector.criteria)
    names = list(job.attacks)
    meta = {"kind": KIND, "n_batches": unit_of(len(names)), "classes": [],
            "detection": {"fprs": [float(f) for f in job.fprs], "fingerprint": run.fingerprint,
                          "detector": job.source.get("detector"), "criteria": criteria}}
    mine = set(names if shard is None else names[shard[0]::shard[1]])
    with _open_store(run.path / DB_NAME, meta, attack_rows(job.attacks)) as store:
        session = store.new_session()
        _clean_sets(store, session, job)
        calib = read_detection(store).clean_scores()[0]
        for i, name in enumerate(names):
            if name in mine and unit_of(i) not in store.done_batches():
                write_set(store, unit_of(i), session, "test", name,
                          _attack_set(job, name, calib))
                _publish(store, run.path)
        store.mark_finished(unit_of(len(names)))
        results = _publish(store, run.path)
    if results["pending"]:
        log.warning("%s lacks %d attack(s) of other shards: %s", RESULTS_NAME,
                    len(results["pending"]), ", ".join(results["pending"]))
    return results
