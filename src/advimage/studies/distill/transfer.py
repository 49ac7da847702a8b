"""The transfer experiment of Ojha et al. (NeurIPS 2023): what a KD student inherits.

"What Knowledge Gets Distilled in Knowledge Distillation?" compares a distilled (KD) student with
an *independent* student of the same recipe on held-out images: (1) the share of the teacher's
adversarial images (I-FGSM, k = 5) that also fool each student, with a control crafted on a
*foreign* network of the student's architecture (no gap expected there); (2) top-1 agreement with
the teacher; (3) whether the teacher's Grad-CAM of the true class is closer to the KD student's map
than to the independent one's (chance 50%); (4) invariance to colour jitter. This module is the
orchestration: :func:`transfer_probes` runs the probes of :mod:`advimage.studies.distill.probes` and
:mod:`advimage.studies.distill.gradcam` over an image set and returns plain JSON numbers;
:func:`run_transfer` (the ``advimage eval transfer`` command's library side) loads checkpoints and
data and writes the results; :func:`format_transfer` prints them as a text table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from advimage.data import ColorJitter, load_dataset
from advimage.eval.plots import eps_label
from advimage.models import ImageClassifier
from advimage.studies.distill.gradcam import gradcam_probe, last_conv_layer, save_gradcam_grid
from advimage.studies.distill.probes import (
    agreement,
    iter_batches,
    jitter_invariance,
    pooled_fooling_rate,
)
from advimage.utils import resolve_device
from advimage.validation import check_images, check_labels

__all__ = [
    "JITTER",
    "last_conv_layer",
    "transfer_probes",
    "save_gradcam_grid",
    "run_transfer",
    "format_transfer",
]

log = logging.getLogger(__name__)

# the trainer's colour jitter (advimage.train.trainer._augmentation, augment="jitter"):
# brightness/contrast/saturation factors drawn uniformly in [0.6, 1.4] (unitless)
JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4}


def _roles(teacher: Any, kd: Any, independent: Any, foreign: Any | None) -> dict[str, Any]:
    """The probe's models (or their checkpoint specs) by role; ``foreign`` only when given."""
    roles = {"teacher": teacher, "kd": kd, "independent": independent}
    if foreign is not None:
        roles["foreign"] = foreign
    return roles


def transfer_probes(
    teacher: ImageClassifier,
    kd: ImageClassifier,
    independent: ImageClassifier,
    x: Tensor,
    y: Tensor,
    *,
    foreign: ImageClassifier | None = None,
    eps: Sequence[float] = (2 / 255, 4 / 255, 8 / 255),
    steps: int = 5,
    cam_layers: Sequence[str] | None = None,
    jitter: bool = True,
    seed: int = 0,
    device: str | torch.device = "auto",
    batch_size: int = 256,
) -> dict[str, Any]:
    """All four probes on held-out images ``x`` (N, C, H, W) in [0, 1] with labels ``y`` (N,).

    Models are moved to ``device`` and set to eval mode. Images go through in chunks of
    ``batch_size`` so memory stays bounded. ``foreign`` (a network of the student's architecture
    trained independently, e.g. an independent student of another seed) adds the control:
    fooling rates of both students on images crafted on it. ``cam_layers`` = (teacher, kd,
    independent) layer names; default :func:`last_conv_layer` of each.

    Returns:
        JSON-able dict: ``accuracy``, ``fooling_rate`` and ``control`` (one entry per eps with
        ``kept`` images and ``rates``), ``agreement``, ``gradcam``, ``invariance`` (``None`` if
        ``jitter`` is false), ``n``, ``seconds``.
    """
    t0 = time.time()
    check_images(x)
    check_labels(y, len(x))
    eps = [float(e) for e in eps]
    if not eps or any(not e > 0 for e in eps):
        raise ValueError(f"eps needs at least one value > 0, got {eps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    models = _roles(teacher, kd, independent, foreign)
    for name, m in models.items():
        if not isinstance(m, ImageClassifier):
            raise ValueError(f"{name} must be an ImageClassifier, got {type(m).__name__}")
        if m.num_classes != teacher.num_classes:
            raise ValueError(f"class counts differ: teacher has {teacher.num_classes} classes, "
                             f"{name} has {m.num_classes}")
        if tuple(m.input_shape) != tuple(x.shape[1:]):
            raise ValueError(f"{name} expects images {tuple(m.input_shape)}, got "
                             f"{tuple(x.shape[1:])}")
    if int(y.max()) >= teacher.num_classes or int(y.min()) < 0:
        raise ValueError(f"labels must lie in [0, {teacher.num_classes}) for these models")
    dev = resolve_device(device)
    for m in models.values():
        m.to(dev).eval()
    students = {k: v for k, v in models.items() if k != "teacher"}

    def batches() -> Iterator[tuple[Tensor, Tensor]]:
        return iter_batches(x, y, batch_size, dev)

    correct = dict.fromkeys(models, 0)
    for xb, yb in batches():
        with torch.no_grad():
            for name, m in models.items():
                correct[name] += int((m(xb).argmax(1) == yb).sum())
    res: dict[str, Any] = {"n": len(x), "eps": eps, "steps": steps}
    res["accuracy"] = {n: c / len(x) for n, c in correct.items()}
    res["agreement"] = {n: agreement(teacher, s, batches()) for n, s in students.items()}
    res["fooling_rate"] = [pooled_fooling_rate(teacher, students, x, y, e, steps=steps,
                                               batch_size=batch_size, device=dev) for e in eps]
    if foreign is not None:
        victims = {"kd": kd, "independent": independent, "teacher": teacher}
        res["control"] = [
            {**pooled_fooling_rate(foreign, victims, x, y, e, steps=steps, batch_size=batch_size,
                                   device=dev), "crafted_on": "foreign"}
            for e in eps
        ]
    else:
        res["control"] = None
    res["gradcam"] = gradcam_probe(teacher, kd, independent, batches(), cam_layers)
    if jitter:
        jit = ColorJitter(**JITTER)
        res["invariance"] = {
            "jitter": dict(JITTER), "seed": seed,
            "rates": {n: jitter_invariance(m, batches(), jit, seed) for n, m in models.items()},
        }
    else:
        res["invariance"] = None
    res["seconds"] = time.time() - t0
    return res


def _describe(spec: str, model: ImageClassifier, meta: dict[str, Any]) -> dict[str, Any]:
    """What the report needs about one checkpoint: sidecar accuracy, arm, seed, recipe."""
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
    """Load checkpoints (``advimage.hub.load_model`` specs) and data, run :func:`transfer_probes`.

    Writes ``out/transfer.json`` (results, resolved arguments, each model's fingerprint and
    sidecar facts, run metadata) and ``out/gradcam.png``; returns the JSON dict. ``limit``
    images are taken class-balanced (``ImageDataset.balanced``) after skipping ``offset``.
    """
    from advimage.hub import load_model
    from advimage.utils import run_metadata, write_json

    args = {k: v for k, v in locals().items() if k not in ("load_model", "run_metadata",
                                                           "write_json")}
    args["out"], args["eps"] = str(out), [float(e) for e in eps]
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    specs = _roles(teacher, kd, independent, foreign)
    loaded = {name: load_model(spec) for name, spec in specs.items()}
    models = {name: m for name, (m, _) in loaded.items()}
    info = {name: _describe(specs[name], m, meta) for name, (m, meta) in loaded.items()}
    ds = load_dataset(data, split, data_root=data_root)
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
    n_total = len(ds)
    stop = n_total if limit is None else min(n_total, offset + limit)
    if offset >= stop:
        raise ValueError(f"offset {offset} leaves no images ({n_total} in {data}/{split})")
    ds = ds.balanced(n_total).subset(list(range(offset, stop)))
    x, y = ds.tensors()  # (N, C, H, W), (N,)
    log.info("transfer probes on %d %s/%s images", len(x), data, split)
    res = transfer_probes(
        models["teacher"], models["kd"], models["independent"], x, y,
        foreign=models.get("foreign"), eps=eps, steps=steps, cam_layers=cam_layers,
        jitter=jitter, seed=seed, device=device, batch_size=batch_size,
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_gradcam_grid(
        models["teacher"], models["kd"], models["independent"], x[:grid_images], y[:grid_images],
        out / "gradcam.png", cam_layers=cam_layers, classes=ds.classes,
    )
    doc = {"tag": tag, "config": args, "models": info, "results": res,
           **run_metadata(resolve_device(device), seed)}
    write_json(out / "transfer.json", doc)
    return doc


def _fmt(v: float | None) -> str:
    return "   n/a" if v is None else f"{v:6.3f}"


def format_transfer(res: dict[str, Any]) -> list[str]:
    """Short text table of :func:`transfer_probes` results (kd vs independent per probe)."""
    lines = [f"{'probe':<30}{'kd':>8}{'indep.':>8}   kept/n"]
    for row in res["fooling_rate"]:
        r = row["rates"]
        lines.append(f"{'fooling eps=' + eps_label(row['eps']):<30}{_fmt(r['kd']):>8}"
                     f"{_fmt(r['independent']):>8}   {row['kept']}/{row['total']}")
    for row in res["control"] or []:
        r = row["rates"]
        lines.append(f"{'control eps=' + eps_label(row['eps']):<30}{_fmt(r['kd']):>8}"
                     f"{_fmt(r['independent']):>8}   {row['kept']}/{row['total']}")
    a, acc = res["agreement"], res["accuracy"]
    lines.append(f"{'agreement with teacher':<30}{_fmt(a['kd']):>8}{_fmt(a['independent']):>8}")
    lines.append(f"{'clean accuracy':<30}{_fmt(acc['kd']):>8}{_fmt(acc['independent']):>8}"
                 f"   teacher {acc['teacher']:.3f}")
    g = res["gradcam"]
    lines.append(f"{'Grad-CAM closer to kd (share)':<30}{_fmt(g['share_closer_to_kd']):>8}"
                 f"{'':>8}   chance 0.5, ties {g['ties']}")
    if res["invariance"] is not None:
        r = res["invariance"]["rates"]
        lines.append(f"{'jitter invariance':<30}{_fmt(r['kd']):>8}{_fmt(r['independent']):>8}"
                     f"   teacher {r['teacher']:.3f}")
    return lines
