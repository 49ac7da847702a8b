"""Sweeps: several run configs as one Ray job (``advimage run A.yaml B.yaml --executor ray``).

Every config keeps its own run directory, store and report, exactly as ``advimage run`` would
write it alone (same per-batch seeds, same rows); what the sweep shares is the pool of Ray
actors. Each actor builds every run of the sweep once, and one queue holds the batches of all
runs, so a worker that finishes one config's batches takes the next config's instead of idling
(the actors hold every run's model: size the sweep to the workers' memory). This process stays
the one writer of every run directory. Without Ray the configs run one after the other.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from advimage.data.base import ImageDataset
from advimage.eval.config import RunConfig
from advimage.eval.config_schema import ExecutorConfig
from advimage.eval.executor import BatchesFailedError, BatchLoader
from advimage.eval.executor_ray import Job, RayExecutor, RunJobs
from advimage.eval.run_batch import EXAMPLES_DIR, build_parts, save_examples
from advimage.eval.runner import (
    _check_run_dir,
    _load_inputs,
    _open_store,
    _todo,
    run_evaluation,
)
from advimage.eval.store import DB_NAME, ResultStore
from advimage.precision import check_precision
from advimage.utils import resolve_device

__all__ = ["run_sweep"]

log = logging.getLogger(__name__)


def run_sweep(configs: Sequence[RunConfig], run_dirs: Sequence[str | Path], *,
              executor: ExecutorConfig, device: str | None = None) -> list[Path]:
    """Evaluate every config into its run directory (resumed when it holds results).

    Args:
        configs: validated run configs.
        run_dirs: one run directory per config.
        executor: ``ray`` shares one pool of actors across the configs; ``serial`` runs them
            in turn (:func:`advimage.eval.runner.run_evaluation`).
        device: overrides every config's ``device``.

    Raises:
        ValueError: as :func:`run_evaluation`, or ``run_dirs`` not one per config.
        BatchesFailedError: batches that failed every attempt, named ``RUN_DIR batch B``,
            raised after every other batch of every run is committed.
    """
    outs = [Path(d) for d in run_dirs]
    if len(outs) != len(configs) or len(set(outs)) != len(outs):
        raise ValueError("a sweep needs one distinct run directory per config")
    resume = [(o / DB_NAME).exists() for o in outs]
    if executor.name != "ray":
        return [run_evaluation(c, o, resume=r, device=device, executor=executor)
                for c, o, r in zip(configs, outs, resume, strict=True)]
    pool = RayExecutor(executor)
    try:
        _sweep_on(pool, configs, outs, resume, device)
    finally:
        pool.close()
    return outs


def _sweep_on(pool: RayExecutor, configs: Sequence[RunConfig], outs: list[Path],
              resume: list[bool], device: str | None) -> None:
    """Prepare every run (nothing written until all are valid and the actors are ready), then
    commit each batch to its run as it arrives."""
    prepared = []
    for c, o, r in zip(configs, outs, resume, strict=True):
        _check_run_dir(o, r)
        dev = resolve_device(device or c.device)
        check_precision(c.precision, dev, "precision")
        spec, meta, ds = _load_inputs(c, None, None, None)
        prepared.append((spec, meta, ds, build_parts(spec, dev)))
    pool.start_many([p[0] for p in prepared], str(device or configs[0].device))  # one device
    failed: dict[Job, str] = {}
    with contextlib.ExitStack() as stack:
        stores: list[tuple[ResultStore, int]] = []
        runs: list[RunJobs] = []
        for (spec, meta, ds, parts), o, r in zip(prepared, outs, resume, strict=True):
            o.mkdir(parents=True, exist_ok=True)
            store = stack.enter_context(_open_store(o, parts, ds, meta, r))
            stores.append((store, store.new_session()))
            bs = spec.cfg.data.batch_size
            runs.append((_todo(store, -(-len(ds) // bs), None), _loader(ds, bs),
                         0 if spec.cfg.examples else None))
        for run, res in pool.run_many(runs, failed):
            for label, tensors in res.examples.items():
                save_examples(outs[run] / EXAMPLES_DIR / f"{label}.safetensors", tensors)
            stores[run][0].write_batch(res.b, res.n, stores[run][1], *res.rows)
        for i, ((store, _), (_, _, ds, _)) in enumerate(zip(stores, prepared, strict=True)):
            if not any(r == i for r, _ in failed):
                store.mark_finished(-(-len(ds) // configs[i].data.batch_size))
    if failed:
        first = min(failed)
        raise BatchesFailedError({first[1]: f"{outs[first[0]]}: {failed[first]}"},
                                 pool.settings.max_retries + 1)


def _loader(ds: ImageDataset, bs: int) -> BatchLoader:
    """``load(b)``: batch ``b`` of ``ds`` in batches of ``bs``, as the runner cuts them."""
    def load(b: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        start = b * bs
        x, y = ds.subset(range(start, min(start + bs, len(ds)))).tensors()  # (B,C,H,W),(B,)
        return start, x, y

    return load
