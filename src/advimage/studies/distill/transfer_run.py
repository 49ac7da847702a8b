"""The ``advimage eval transfer`` command's library side (Ojha et al., NeurIPS 2023).

:func:`run_transfer` loads the teacher, the KD and independent students (and optionally the
control's foreign network) from ``advimage.models.hub.load_model`` specs, takes a
class-balanced slice of a dataset, runs :func:`~advimage.studies.distill.transfer.transfer_probes`
and writes
``transfer.json`` (results, resolved arguments, each model's fingerprint and sidecar facts, run
metadata) and ``gradcam.png``, the inputs of ``reports/distill``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from advimage.data import ImageDataset, load_dataset
from advimage.models import ImageClassifier
from advimage.models.hub import load_model
from advimage.studies.distill.gradcam import save_gradcam_grid
from advimage.studies.distill.transfer import roles, transfer_probes
from advimage.utils import resolve_device, run_metadata, write_json

__all__ = ["describe_checkpoint", "run_transfer"]

log = logging.getLogger(__name__)


def describe_checkpoint(spec: str, model: ImageClassifier, meta: dict[str, Any]) -> dict[str, Any]:
    """What the report needs about one checkpoint: sidecar accuracy, arm, seed, recipe.

    Args:
        spec: the ``load_model`` spec it was loaded from.
        model: the loaded classifier.
        meta: its checkpoint sidecar.
    """
    cfg = meta.get("train_config") or {}
    history = meta.get("history") or []
    return {
        "spec": str(spec),
        "arch": model.arch,
        "fingerprint": model.fingerprint(),
        "num_classes": model.num_classes,
        "dataset": meta.get("dataset"),
        "accuracy": meta.get("accuracy"),
        "seed": meta.get("seed"),
        "arm": (meta.get("distill") or {}).get("arm"),
        "augment": cfg.get("augment"),
        "epochs": cfg.get("epochs"),
        "train_seconds": sum(float(h.get("seconds", 0.0)) for h in history) if history else None,
        "imported": bool(meta.get("imported", False)),
    }


def run_transfer(
    teacher: str,
    kd: str,
    independent: str,
    out: str | Path,
    *,
    foreign: str | None = None,
    data: str = "cifar10",
    data_root: str | None = None,
    split: str = "test",
    limit: int | None = None,
    offset: int = 0,
    eps: Sequence[float] = (2 / 255, 4 / 255, 8 / 255),
    steps: int = 5,
    cam_layers: Sequence[str] | None = None,
    jitter: bool = True,
    device: str = "auto",
    seed: int = 0,
    batch_size: int = 256,
    tag: str | None = None,
    grid_images: int = 6,
) -> dict[str, Any]:
    """Load checkpoints and data, run the transfer probes, write the results; returns the JSON.

    Args:
        teacher: ``load_model`` spec of the teacher (likewise ``kd``, ``independent`` and the
            optional ``foreign`` control network).
        out: folder for ``transfer.json`` and ``gradcam.png`` (``grid_images`` rows).
        limit: images of ``data``/``split``, class-balanced, after skipping ``offset``.
        tag: label stored in ``transfer.json`` (the report's teacher group).
        eps: the probes' options, as in
            :func:`~advimage.studies.distill.transfer.transfer_probes` (likewise ``steps``,
            ``cam_layers``, ``jitter``, ``device``, ``seed``, ``batch_size``).

    Raises:
        ValueError: a bad ``limit``/``offset``, or models of other class counts or datasets.
    """
    args = dict(locals())  # the resolved arguments, in signature order, for transfer.json
    args["out"], args["eps"] = str(out), [float(e) for e in eps]
    _check_slice(limit, offset)  # before any loading
    specs = roles(teacher, kd, independent, foreign)
    loaded = {name: load_model(spec) for name, spec in specs.items()}
    models = {name: m for name, (m, _) in loaded.items()}
    info = {name: describe_checkpoint(specs[name], m, meta) for name, (m, meta) in loaded.items()}
    ds = load_dataset(data, split, data_root=data_root)
    _check_models(models, info, ds, data)
    x, y, classes = _probe_images(ds, data, split, limit, offset)
    trio = models["teacher"], models["kd"], models["independent"]
    res = transfer_probes(*trio, x, y, foreign=models.get("foreign"), eps=eps, steps=steps,
                          cam_layers=cam_layers, jitter=jitter, seed=seed, device=device,
                          batch_size=batch_size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_gradcam_grid(*trio, x[:grid_images], y[:grid_images], out / "gradcam.png",
                      cam_layers=cam_layers, classes=classes)
    doc = {"tag": tag, "config": args, "models": info, "results": res,
           **run_metadata(resolve_device(device), seed)}
    write_json(out / "transfer.json", doc)
    return doc


def _check_slice(limit: int | None, offset: int) -> None:
    """Refuse a ``limit`` below 1 or a negative ``offset``."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")


def _check_models(
    models: dict[str, ImageClassifier], info: dict[str, dict[str, Any]], ds: ImageDataset,
    data: str,
) -> None:
    """Refuse models whose class count differs from the teacher's or the dataset's, or that
    were trained on another dataset."""
    for name, m in models.items():
        if m.num_classes != models["teacher"].num_classes:
            raise ValueError(f"class counts differ: teacher has {models['teacher'].num_classes} "
                             f"classes, {name} has {m.num_classes}")
        if m.num_classes != ds.num_classes:
            raise ValueError(f"{name} has {m.num_classes} classes but {data} has "
                             f"{ds.num_classes}")
        trained_on = info[name]["dataset"]
        if trained_on is not None and trained_on != data:
            raise ValueError(f"{name} checkpoint was trained on {trained_on!r}, not {data!r}")


def _probe_images(
    ds: ImageDataset, data: str, split: str, limit: int | None, offset: int
) -> tuple[Tensor, Tensor, list[str]]:
    """Images ``offset .. offset + limit`` of ``ds`` in class-balanced order.

    Returns:
        Images (N, C, H, W), labels (N,) and the class names.
    """
    n_total = len(ds)
    stop = n_total if limit is None else min(n_total, offset + limit)
    if offset >= stop:
        raise ValueError(f"offset {offset} leaves no images ({n_total} in {data}/{split})")
    ds = ds.balanced(n_total).subset(list(range(offset, stop)))
    x, y = ds.tensors()  # (N, C, H, W), (N,)
    log.info("transfer probes on %d %s/%s images", len(x), data, split)
    return x, y, ds.classes
