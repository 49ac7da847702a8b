"""Run a declarative evaluation into a resumable run directory.

``run_evaluation(config, run_dir)`` streams the dataset batch by batch; for every batch it
attacks every defended model with every attack of the grid and commits the outcome to the
SQLite store as one transaction (see :mod:`advimage.eval.store`). A killed run resumes with
``resume=True``: finished batches are skipped, and since every random draw of a batch is seeded
from (run seed, batch index, defense, attack), a resumed batch is bit-identical to the batch an
uninterrupted run computes. For the same reason a run splits across processes with
``shard=(i, n)`` (``advimage run --shard I/N``): each process takes every n-th batch of one run
directory (SQLite serializes their commits) and the union is the serial run's rows, bit for bit;
and across Ray workers with ``executor="ray"`` (:mod:`advimage.eval.executor`), where this
process alone writes the run directory. Memory holds one batch at a time per worker. Each batch
is counted by :mod:`advimage.eval.batch`, the core shared with
:func:`advimage.eval.robust.evaluate_robustness` (same seed, same counts).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from advimage.attacks.base import Attack
from advimage.data.base import ImageDataset
from advimage.data.registry import load_dataset
from advimage.errors import ConfigMismatchError, CorruptFileError
from advimage.eval.batch import batch_seed
from advimage.eval.config import AttackConfig, RunConfig, parse_config
from advimage.eval.config_schema import ExecutorConfig, parse_executor, same_run
from advimage.eval.executor import Executor, SerialExecutor
from advimage.eval.executor_ray import RayExecutor
from advimage.eval.run_batch import (
    EXAMPLES_DIR,
    UNBOUNDED_LABEL,
    RunParts,
    RunSpec,
    build_parts,
    save_examples,
)
from advimage.eval.store import DB_NAME, ResultStore
from advimage.model_flags import model_flags
from advimage.models.hub import load_model
from advimage.precision import check_precision
from advimage.utils import resolve_device, run_metadata, write_json
from advimage.validation import check_shard

__all__ = ["UNBOUNDED_LABEL", "batch_seed", "default_run_dir", "load_run_config",
           "make_executor", "run_evaluation"]

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"


def _attack_rows(specs: list[AttackConfig], built: list[Attack]) -> list[dict[str, Any]]:
    rows = []
    for i, (s, a) in enumerate(zip(specs, built, strict=True)):
        rows.append({
            "attack": s.key, "name": s.name, "label": s.label, "kind": s.kind, "norm": s.norm,
            "eps": s.eps, "options": json.dumps(s.options, sort_keys=True),
            "steps": getattr(a, "steps", getattr(a, "queries", 1)),
            "restarts": getattr(a, "restarts", 1), "eot": getattr(a, "eot", 1), "position": i,
        })
    return rows


def _defense_rows(config: RunConfig,
                  defended: list[tuple[str, nn.Module]]) -> list[dict[str, Any]]:
    return [{"defense": label, "name": d.name, "options": json.dumps(d.options),
             **model_flags(m).as_row(), "position": i}
            for i, ((label, m), d) in enumerate(zip(defended, config.defenses, strict=True))]


def _resume_store(db: Path, config: RunConfig, n_batches: int, n_images: int) -> ResultStore:
    """Open (and verify) the store of the run being resumed; refuse one that does not belong
    to this config and dataset."""
    out = db.parent
    stored = json.loads((out / CONFIG_NAME).read_text(encoding="utf-8"))
    if not same_run(stored, config.to_dict()):
        raise ConfigMismatchError(f"config differs from the one stored in {out / CONFIG_NAME}; "
                                  "resume with the stored config")
    store = ResultStore(db)
    try:
        total = store.get_meta("n_batches")
        if total is not None and total != n_batches:
            raise ConfigMismatchError(
                f"the dataset now gives {n_batches} batches, the run in {out} was started with "
                f"{total}; resume it with the same data")
        bs = config.data.batch_size
        for b, n in store.conn.execute("SELECT batch, n FROM batches ORDER BY batch"):
            if not 0 <= b < n_batches or n != min(bs, n_images - b * bs):
                raise CorruptFileError(
                    f"{db}: batch {b} of {n} images does not fit this run's {n_images} images "
                    f"in batches of {bs}; the result store is damaged or from other data")
        store.upgrade(n_batches)
    except BaseException:
        store.close()
        raise
    return store


def default_run_dir(name: str) -> Path:
    """``runs/NAME-YYYYmmdd-HHMMSS`` under the current directory."""
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config stored in a run directory (for ``--resume``)."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise ValueError(f"not a run directory (no {CONFIG_NAME}): {Path(run_dir)}")
    return parse_config(json.loads(path.read_text(encoding="utf-8")), base=Path(run_dir))


def _todo(store: ResultStore, n_batches: int, shard: tuple[int, int] | None) -> list[int]:
    done = store.done_batches()
    mine = range(n_batches) if shard is None else range(shard[0], n_batches, shard[1])
    return [b for b in mine if b not in done]


def _run_batches(store: ResultStore, parts: RunParts, ds: ImageDataset, out: Path,
                 executor: Executor, shard: tuple[int, int] | None, progress: bool,
                 on_batch: Callable[[int], None] | None) -> None:
    """Have ``executor`` compute this process's batches that the store does not hold yet and
    commit each as it arrives (this process is the run directory's one writer)."""
    config = parts.cfg
    bs = config.data.batch_size
    n_batches = -(-len(ds) // bs)
    session = store.new_session()
    todo = _todo(store, n_batches, shard)
    log.info("run %s: %d of %d batches to do%s", out, len(todo), n_batches,
             "" if shard is None else f" (shard {shard[0] + 1}/{shard[1]})")

    def load(b: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        start = b * bs
        x, y = ds.subset(range(start, min(start + bs, len(ds)))).tensors()  # (B,C,H,W),(B,)
        return start, x, y

    results = executor.run(parts, todo, load, 0 if config.examples else None)
    for res in tqdm(results, total=len(todo), desc="run", disable=not progress, leave=False):
        for label, tensors in res.examples.items():
            save_examples(out / EXAMPLES_DIR / f"{label}.safetensors", tensors)
        store.write_batch(res.b, res.n, session, *res.rows)
        if on_batch is not None:
            on_batch(res.b)


def _load_inputs(config: RunConfig, model: nn.Module | None, dataset: ImageDataset | None,
                 channels_last: bool | None) -> tuple[RunSpec, dict, ImageDataset]:
    """The run's spec (model and transfer surrogates as loaded, on the CPU), the model's
    metadata and the dataset."""
    model_meta: dict = {"source": "a model given to run_evaluation"}
    if model is None:
        model, model_meta = load_model(config.model)
    ds = dataset
    if ds is None:
        d = config.data
        ds = load_dataset(d.name, d.split, data_root=d.root, image_size=d.image_size,
                          classes=getattr(model, "classes", None))  # folders map by name
        if d.limit is not None:
            ds = ds.balanced(d.limit)
    if len(ds) == 0:
        raise ValueError("the dataset is empty")
    paths = dict.fromkeys(p for s in config.attacks for p in s.surrogates)  # each loaded once
    surrogates = {p: load_model(p)[0] for p in paths}
    first = ds.subset([0]).tensors()[0]  # (1, C, H, W): the budget check
    return RunSpec(config, model, surrogates, first, channels_last), model_meta, ds


def make_executor(settings: ExecutorConfig) -> Executor:
    """The executor that ``settings`` names (``serial`` or ``ray``)."""
    return RayExecutor(settings) if settings.name == "ray" else SerialExecutor()


def _open_store(out: Path, parts: RunParts, ds: ImageDataset, model_meta: dict,
                resume: bool) -> ResultStore:
    """The run's store: verified when resuming, else created with the run's metadata, attack
    and defense rows, ``run.json`` and (last, so that shards join only then) ``config.json``."""
    config, dev = parts.cfg, parts.dev
    n_batches = -(-len(ds) // config.data.batch_size)
    db = out / DB_NAME
    if resume:
        return _resume_store(db, config, n_batches, len(ds))
    store = ResultStore(db, create=True)
    try:
        meta = {**run_metadata(dev, config.seed), "started": time.time(), "model_source":
                model_meta.get("source"), "data": ds.describe()}  # data: folder labels
        store.initialize(
            {"run": meta, "classes": list(ds.classes), "n_batches": n_batches},
            _attack_rows(parts.specs, parts.attacks), _defense_rows(config, parts.defended))
        write_json(out / "run.json", meta)
        write_json(out / CONFIG_NAME, config.to_dict())  # last: shards join once it exists
    except BaseException:
        store.close()
        raise
    return store


def _check_run_dir(out: Path, resume: bool) -> Path:
    db = out / DB_NAME
    if resume and not db.exists():
        raise ValueError(f"nothing to resume in {out} (no {DB_NAME})")
    if not resume and db.exists():
        raise ValueError(f"run directory {out} already holds results; resume it with "
                         f"--resume {out}")
    return out


def run_evaluation(
    config: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: bool = False,
    model: nn.Module | None = None,
    dataset: ImageDataset | None = None,
    on_batch: Callable[[int], None] | None = None,
    shard: tuple[int, int] | None = None,
    channels_last: bool | None = None,
    executor: str | ExecutorConfig | None = None,
) -> Path:
    """Evaluate ``config`` into ``run_dir`` (created), or continue it when ``resume``.

    Args:
        config: validated run config (:func:`advimage.eval.config.load_config`).
        run_dir: run directory; holds ``config.json``, ``run.json``, ``results.sqlite`` and
            ``examples/*.safetensors``.
        resume: continue an interrupted run; finished batches are not recomputed.
        device: overrides ``config.device``.
        model, dataset: use these objects instead of loading ``config.model``/``config.data``.
        on_batch: called with the batch index after each committed batch.
        shard: ``(i, n)``, 0 <= i < n: only batches ``b`` with ``b % n == i`` (a process of
            ``n`` working on one run; create the run with one of them, join it with ``resume``).
        channels_last: channels-last models (``None``: CUDA in bf16/fp16; advimage.precision).
        executor: ``serial``, ``ray`` or an :class:`ExecutorConfig`; None: ``config.executor``.

    Returns:
        The run directory.

    Raises:
        ValueError: a fresh run into a folder with results, nothing to resume, a config that
            differs from the stored one, an empty dataset, or a bad ``shard``.
        advimage.eval.executor.ExecutorError: Ray unreachable, or a worker unable to build the
            run; its ``BatchesFailedError`` (raised after the other batches are committed)
            names the batches that failed every attempt.
    """
    check_shard(shard)
    out = _check_run_dir(Path(run_dir), resume)
    settings = parse_executor(executor) if isinstance(executor, str) else (
        executor or config.executor)
    dev = resolve_device(device or config.device)
    check_precision(config.precision, dev, "precision")  # before any loading
    spec, model_meta, ds = _load_inputs(config, model, dataset, channels_last)
    pool = make_executor(settings)
    try:
        parts = build_parts(spec, dev)  # budgets and options checked here, before any worker
        pool.start(spec, str(device or config.device))  # workers ready before anything is written
        out.mkdir(parents=True, exist_ok=True)
        with _open_store(out, parts, ds, model_meta, resume) as store:
            _run_batches(store, parts, ds, out, pool, shard, progress, on_batch)
            store.mark_finished(-(-len(ds) // config.data.batch_size))
    finally:
        pool.close()
    return out
