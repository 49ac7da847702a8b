"""Run a declarative evaluation into a resumable run directory.

``run_evaluation(config, run_dir)`` streams the dataset batch by batch; for every batch it
attacks every defended model with every attack of the grid and commits the outcome to the
SQLite store as one transaction (see :mod:`advimage.eval.store`). A killed run resumes with
``resume=True``: finished batches are skipped, and since every random draw of a batch is seeded
from (run seed, batch index, defense, attack), a resumed batch is bit-identical to the batch an
uninterrupted run computes. For the same reason a run splits across processes with
``shard=(i, n)`` (``advimage run --shard I/N``): each process takes every n-th batch of one run
directory (SQLite serializes their commits) and the union is the serial run's rows, bit for bit.
Memory holds one batch at a time. Each batch is counted by :mod:`advimage.eval.batch`, the core
shared with :func:`advimage.eval.robust.evaluate_robustness` (same seed, same counts).
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
from advimage.attacks.registry import create_attack
from advimage.data.base import ImageDataset
from advimage.data.registry import load_dataset
from advimage.defend.registry import build_defense
from advimage.detect.registry import build_detector
from advimage.errors import ConfigMismatchError, CorruptFileError
from advimage.eval.batch import batch_seed
from advimage.eval.config import AttackConfig, RunConfig, parse_config
from advimage.eval.run_batch import RunParts, run_batch
from advimage.eval.store import DB_NAME, ResultStore
from advimage.model_flags import model_flags
from advimage.models.hub import load_model
from advimage.oom import oom_guard
from advimage.precision import check_precision, with_precision
from advimage.utils import resolve_device, run_metadata, write_json
from advimage.validation import check_shard

__all__ = ["UNBOUNDED_LABEL", "batch_seed", "default_run_dir", "load_run_config",
           "run_evaluation"]

log = logging.getLogger(__name__)

UNBOUNDED_LABEL = "unbounded-pgd"
CONFIG_NAME = "config.json"


def _unbounded(cfg: RunConfig) -> AttackConfig:
    # eps = 1.0 (the whole [0, 1] pixel box in L-inf): every image is reachable
    return AttackConfig("pgd", 1.0, "linf", {"steps": cfg.checks.unbounded_steps},
                        UNBOUNDED_LABEL, "unbounded")


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
    if stored != config.to_dict():
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


def _run_batches(store: ResultStore, parts: RunParts, ds: ImageDataset, out: Path,
                 shard: tuple[int, int] | None, progress: bool,
                 on_batch: Callable[[int], None] | None) -> None:
    """Compute and commit this process's batches that the store does not hold yet."""
    config, dev = parts.cfg, parts.dev
    bs = config.data.batch_size
    n_batches = -(-len(ds) // bs)
    session = store.new_session()
    done = store.done_batches()
    mine = range(n_batches) if shard is None else range(shard[0], n_batches, shard[1])
    todo = [b for b in mine if b not in done]
    log.info("run %s: %d of %d batches to do%s", out, len(todo), n_batches,
             "" if shard is None else f" (shard {shard[0] + 1}/{shard[1]})")
    for b in tqdm(todo, desc="run", disable=not progress, leave=False):
        start = b * bs
        x, y = ds.subset(range(start, min(start + bs, len(ds)))).tensors()  # (B,C,H,W),(B,)
        x, y = x.to(dev), y.to(dev)
        with oom_guard(bs, "--batch-size (or data.batch_size)"):
            rows = run_batch(parts, b, start, x, y,
                              out if b == 0 and config.examples else None)
        store.write_batch(b, len(y), session, *rows)
        if on_batch is not None:
            on_batch(b)


def _load_inputs(config: RunConfig, dev: torch.device, model: nn.Module | None,
                 dataset: ImageDataset | None, channels_last: bool | None,
                 ) -> tuple[nn.Module, dict, ImageDataset]:
    """The run's model (on ``dev``, in its precision), its metadata and the dataset."""
    model_meta: dict = {"source": "a model given to run_evaluation"}
    if model is None:
        model, model_meta = load_model(config.model)
    model = model.to(dev).eval()
    ds = dataset
    if ds is None:
        d = config.data
        ds = load_dataset(d.name, d.split, data_root=d.root, image_size=d.image_size,
                          classes=getattr(model, "classes", None))  # folders map by name
        if d.limit is not None:
            ds = ds.balanced(d.limit)
    if len(ds) == 0:
        raise ValueError("the dataset is empty")
    model = with_precision(model, config.precision, dev, channels_last, "precision")

    return model, model_meta, ds


def _build_parts(config: RunConfig, model: nn.Module, ds: ImageDataset, dev: torch.device,
                 channels_last: bool | None) -> RunParts:
    """Build the attacks (budgets checked before anything is written), defenses, detectors
    and transfer surrogates of a run."""
    specs = list(config.attacks)
    if config.checks.enabled and config.checks.unbounded:
        specs.append(_unbounded(config))
    attacks = [create_attack(s.name, eps=s.eps, norm=s.norm, seed=0, **s.options)
               for s in specs]
    first = ds.subset([0]).tensors()[0]  # an L2 eps beyond its diagonal: refused before writing
    for attack in attacks:
        attack.check_budget(first)
    defended = [(d.label, build_defense(d.name, model, d.options).to(dev).eval())
                for d in config.defenses]
    surrogates = {s.surrogate: with_precision(load_model(s.surrogate)[0].to(dev).eval(),
                                              config.precision, dev, channels_last, "precision")
                  for s in specs if s.surrogate}
    detectors = {label: [(d.label, build_detector(d.name, m, d.options))
                         for d in config.detectors] for label, m in defended}

    return RunParts(config, specs, attacks, defended, detectors, surrogates, dev)


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

    Returns:
        The run directory.

    Raises:
        ValueError: a fresh run into a folder with results, nothing to resume, a config that
            differs from the stored one, an empty dataset, or a bad ``shard``.
    """
    check_shard(shard)
    out = Path(run_dir)
    db = out / DB_NAME
    if resume and not db.exists():
        raise ValueError(f"nothing to resume in {out} (no {DB_NAME})")
    if not resume and db.exists():
        raise ValueError(f"run directory {out} already holds results; resume it with "
                         f"--resume {out}")
    dev = resolve_device(device or config.device)
    check_precision(config.precision, dev, "precision")  # before any loading
    model, model_meta, ds = _load_inputs(config, dev, model, dataset, channels_last)
    parts = _build_parts(config, model, ds, dev, channels_last)
    specs, attacks, defended = parts.specs, parts.attacks, parts.defended

    out.mkdir(parents=True, exist_ok=True)
    bs = config.data.batch_size
    n_batches = -(-len(ds) // bs)
    store = _resume_store(db, config, n_batches, len(ds)) if resume else \
        ResultStore(db, create=True)
    with store:
        if not resume:
            meta = {**run_metadata(dev, config.seed), "started": time.time(), "model_source":
                    model_meta.get("source"), "data": ds.describe()}  # data: folder labels
            store.initialize(
                {"run": meta, "classes": list(ds.classes), "n_batches": n_batches},
                _attack_rows(specs, attacks), _defense_rows(config, defended))
            write_json(out / "run.json", meta)
            write_json(out / CONFIG_NAME, config.to_dict())  # last: shards join once it exists
        _run_batches(store, parts, ds, out, shard, progress, on_batch)
        store.mark_finished(n_batches)
    return out
