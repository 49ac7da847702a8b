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

The sets are computed by the evaluation's executor (:mod:`advimage.eval.executor`):
``executor="ray"`` computes them on Ray actors that receive the job (model, detector, images,
attacks) once through Ray's object store (:class:`DetectionWork`), with the executor's retries
and :class:`~advimage.eval.executor.BatchesFailedError`; this process alone writes the store.
A unit is a whole set: the detector scores a set in one call whose noise draws run on from
image to image, so a set cut into chunks would not score as the serial run does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from advimage.eval.config_schema import ExecutorConfig, parse_executor
from advimage.eval.detection_job import AttackFn, DetectionAttack, DetectionJob, DetectionWork
from advimage.eval.detection_store import (
    CALIBRATION,
    TEST,
    ScoredSet,
    detection_results,
    read_detection,
    unit_of,
    write_set,
)
from advimage.eval.executor import BatchesFailedError
from advimage.eval.executor_ray import RayExecutor
from advimage.eval.store import DB_NAME, ResultStore
from advimage.rundir import open_run_dir
from advimage.utils import write_json
from advimage.validation import check_shard

__all__ = ["KIND", "AttackFn", "DetectionAttack", "DetectionJob", "DetectionWork", "attack_rows",
           "run_detection", "tensor_digest"]

log = logging.getLogger(__name__)

KIND = "detection"  # the run kind recorded in the manifest and the store
RESULTS_NAME = "results.json"
# what an advimage before the shared harness wrote: such a folder is refused, never resumed
_LEGACY = ("calibration.pt", "clean.pt", "attack-*.pt", "results.json", DB_NAME)


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


Units = Callable[[list[int], Callable[[int], Any]], Iterator[tuple[int, ScoredSet]]]


def _serial_units(job: DetectionJob) -> Units:
    """Units computed here, one after the other (the job as it is, on its device)."""
    work = DetectionWork(job)
    return lambda todo, load: (work.compute(b, load(b)) for b in todo)


def _ray_units(pool: RayExecutor, job: DetectionJob) -> Units:
    """Units computed on ``pool``'s actors; failures name the unit's set."""
    names = {CALIBRATION: "calibration images", TEST: "test images",
             **{unit_of(i): n for i, n in enumerate(job.attacks)}}
    return lambda todo, load: pool.units(todo, load, names=names,
                                         then="rerun the same command to compute them")


def _publish(store: ResultStore, out: Path) -> dict[str, Any]:
    results = detection_results(read_detection(store))
    write_json(out / RESULTS_NAME, results)  # atomic; other shards rewrite it too
    return results


def run_detection(job: DetectionJob, out_dir: str | Path,
                  shard: tuple[int, int] | None = None,
                  executor: str | ExecutorConfig | None = None,
                  device: str = "cpu") -> dict[str, Any]:
    """Score the clean sets, then craft and score every attack of ``job`` into ``out_dir``.

    Args:
        job: The run.
        out_dir: The run folder (created, or resumed: stored sets are kept).
        shard: ``(i, n)``: craft only every n-th attack, from the i-th.
        executor: ``serial`` (default), ``ray`` or an :class:`ExecutorConfig`.
        device: Where Ray workers compute (``cpu``, ``cuda``, ``auto``); the serial run
            computes where ``job.model`` is.

    Returns:
        The summary also written to ``results.json``; ``pending`` lists the attacks not
        stored yet (other shards'); the shard that ends last writes the complete one.

    Raises:
        ValueError: a bad ``shard``.
        ConfigMismatchError: ``out_dir`` holds results of another configuration.
        CorruptFileError: a damaged store or manifest.
        advimage.eval.executor.ExecutorError: Ray unreachable or a worker unable to build the
            job (nothing written); its ``BatchesFailedError`` names the sets that failed every
            attempt, after the others are stored.
    """
    check_shard(shard)
    settings = parse_executor(executor) if isinstance(executor, str) else (
        executor or ExecutorConfig())
    pool = RayExecutor(settings) if settings.name == "ray" else None
    try:
        if pool is not None:  # workers ready before anything is written
            job.model.cpu()  # the driver's copy only fingerprints the model
            pool.start_workloads([DetectionWork(job)], device)
        units = _serial_units(job) if pool is None else _ray_units(pool, job)
        results = _run_units(job, Path(out_dir), shard, units)
    finally:
        if pool is not None:
            pool.close()
    if results["pending"]:
        log.warning("%s lacks %d attack(s) of other shards: %s", RESULTS_NAME,
                    len(results["pending"]), ", ".join(results["pending"]))
    return results


def _run_units(job: DetectionJob, out_dir: Path, shard: tuple[int, int] | None,
               units: Units) -> dict[str, Any]:
    """The clean sets, then this process's attacks, each stored as it arrives."""
    run = open_run_dir(out_dir, KIND, _resolved(job), legacy=_LEGACY)
    criteria = list(job.detector.criteria)
    names = list(job.attacks)
    meta = {"kind": KIND, "n_batches": unit_of(len(names)), "classes": [],
            "detection": {"fprs": [float(f) for f in job.fprs], "fingerprint": run.fingerprint,
                          "detector": job.source.get("detector"), "criteria": criteria}}
    mine = set(names if shard is None else names[shard[0]::shard[1]])
    with _open_store(run.path / DB_NAME, meta, attack_rows(job.attacks)) as store:
        session = store.new_session()
        clean = [b for b in (CALIBRATION, TEST) if b not in store.done_batches()]
        for b, scored in units(clean, lambda b: None):
            write_set(store, b, session, "test" if b == TEST else "calibration", "", scored)
        calib = read_detection(store).clean_scores()[0]
        todo = [unit_of(i) for i, n in enumerate(names)
                if n in mine and unit_of(i) not in store.done_batches()]
        try:
            for b, scored in units(todo, lambda b: calib):
                write_set(store, b, session, "test", names[b - unit_of(0)], scored)
                _publish(store, run.path)
        except BatchesFailedError:
            _publish(store, run.path)  # what is stored; the run is not finished
            raise
        store.mark_finished(unit_of(len(names)))
        return _publish(store, run.path)
