"""Craft adversarial images for a dataset and store them losslessly.

Per batch: the exact float32 tensors (``x_adv``, clean ``x``, labels, predictions) in a
safetensors shard, and 8-bit PNGs for viewing. The output folder is a run folder
(:mod:`advimage.rundir`): its ``manifest.json`` holds the resolved configuration (attack with
every option, model fingerprint, data, limit, batch size) and lists each finished shard with
its sha256 and the digest of the images it was crafted from. A rerun of the same configuration
resumes by reusing listed shards; any other configuration is refused, so a summary never mixes
old shards with new options. ``summary.json`` is rewritten after every batch, and
:func:`load_adversarials` reads exactly the listed shards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from advimage.errors import ConfigMismatchError, CorruptFileError, UserInputError
from advimage.rundir import RunDir, open_run_dir, read_run_dir
from advimage.utils import run_metadata, write_json

__all__ = ["KIND", "attack_identity", "load_adversarials", "model_identity", "save_adversarials"]

KIND = "attack"  # the run kind recorded in the manifest
# what an advimage without manifests wrote: such a folder is refused, never resumed
_LEGACY = ("tensors/batch_*.safetensors", "summary.json")


def _png(img: torch.Tensor, path: Path) -> None:
    u8 = (img.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)  # (C, H, W)
    arr = u8[0].numpy() if u8.shape[0] == 1 else u8.permute(1, 2, 0).numpy()
    Image.fromarray(np.ascontiguousarray(arr)).save(path)


def _shard_name(b: int) -> str:
    return f"tensors/batch_{b:05d}.safetensors"


def _plain(value: Any) -> Any:
    """JSON value of an attack option; objects (a loss, a transform) by their qualified name."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    kind = value if callable(value) and hasattr(value, "__qualname__") else type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def attack_identity(attack: Any) -> dict[str, Any]:
    """Name, class and every resolved option (defaults included) of a dataclass attack."""
    options = ({f.name: _plain(getattr(attack, f.name)) for f in dataclasses.fields(attack)
                if f.init} if dataclasses.is_dataclass(attack) else {})
    return {"name": getattr(attack, "name", type(attack).__name__),
            "class": type(attack).__name__, "options": options}


def model_identity(model: nn.Module) -> dict[str, Any]:
    """Architecture and weight fingerprint (the classifier's own, else sha256 of its state)."""
    fp = getattr(model, "fingerprint", None)
    if callable(fp):
        digest = str(fp())
    else:
        h = hashlib.sha256()
        for name, t in sorted(model.state_dict().items()):
            flat = t.detach().cpu().contiguous().reshape(-1)
            h.update(f"{name}|{flat.dtype}|{tuple(t.shape)}|".encode())
            h.update(flat.view(torch.uint8).numpy().tobytes())
        digest = h.hexdigest()
    return {"arch": str(getattr(model, "arch", type(model).__name__)), "fingerprint": digest}


def _inputs_digest(x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in (x.detach().float().cpu().contiguous(), y.detach().long().cpu().contiguous()):
        h.update(f"{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _read_shard(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CorruptFileError(f"{path} is damaged (not a safetensors shard: "
                               f"{str(err).splitlines()[0] if str(err) else err}); remove it "
                               "to recompute it") from None


def _resolved(model: nn.Module, dataset: Any, attack: Any, n_total: int, batch_size: int,
              limit: int | None, png: bool, config: Mapping[str, Any] | None) -> dict[str, Any]:
    describe = getattr(dataset, "describe", None)
    return {"attack": attack_identity(attack), "model": model_identity(model),
            "data": describe() if callable(describe) else {"n": len(dataset)},
            "n_images": n_total, "batch_size": batch_size, "limit": limit, "png": png,
            "source": dict(config or {})}


def _craft(model: nn.Module, attack: Any, x: torch.Tensor, y: torch.Tensor,
           device: torch.device | str) -> tuple[dict[str, torch.Tensor], float]:
    x, y = x.to(device), y.to(device)
    t0 = time.perf_counter()
    x_adv = attack(model, x, y)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        pred, pred_adv = model(x).argmax(1), model(x_adv).argmax(1)
    return {"x": x.float().cpu().contiguous(), "x_adv": x_adv.float().cpu().contiguous(),
            "y": y.cpu(), "pred": pred.cpu(), "pred_adv": pred_adv.cpu()}, seconds


def _shard(run: RunDir, b: int, x: torch.Tensor, y: torch.Tensor, craft: Any,
           png_first: int | None) -> tuple[dict[str, torch.Tensor], float]:
    """Batch ``b``'s tensors: the listed shard when its inputs match, else crafted and published."""
    name, digest = _shard_name(b), _inputs_digest(x, y)
    rec = run.entry(name) if run.has(name) else None
    if rec is not None:
        if rec.get("inputs_sha256") != digest:
            raise ConfigMismatchError(
                f"{run.path / name} was crafted from other images than batch {b} of this data "
                f"(the dataset changed?); choose another output folder (--out) or remove "
                f"{run.path} to start over")
        return _read_shard(run.verified(name)), 0.0
    tensors, seconds = craft(x, y)
    (run.path / "tensors").mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=run.path / "tensors", prefix=".batch_", suffix=".tmp")
    os.close(fd)
    save_file(tensors, tmp)
    if png_first is not None:
        (run.path / "png").mkdir(exist_ok=True)
        for i, (img, yi, pi) in enumerate(zip(tensors["x_adv"], tensors["y"],
                                              tensors["pred_adv"], strict=True)):
            _png(img, run.path / "png" / f"{png_first + i:06d}_y{int(yi)}_p{int(pi)}.png")
    run.publish(tmp, name, n=len(y), inputs_sha256=digest)
    return tensors, seconds


def save_adversarials(
    model: nn.Module,
    dataset: Any,
    attack: Any,
    out_dir: str | Path,
    *,
    batch_size: int = 256,
    limit: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    config: dict[str, Any] | None = None,
    png: bool = True,
) -> dict[str, Any]:
    """Run ``attack`` over ``dataset``; write shards, PNGs and ``summary.json`` to ``out_dir``.

    ``config`` (JSON values) describes where model and data came from (paths, dataset name,
    split, ...); it joins the resolved configuration that the folder is bound to.

    Raises:
        ConfigMismatchError: ``out_dir`` holds another configuration's outputs.
        CorruptFileError: a listed shard was damaged.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserInputError(f"--batch-size must be >= 1, got {batch_size!r}")
    n_total = min(len(dataset), limit or len(dataset))
    if n_total < 1:
        raise UserInputError("the dataset is empty: nothing to attack")
    n_batches = -(-n_total // batch_size)
    resolved = _resolved(model, dataset, attack, n_total, batch_size, limit, png, config)
    run = open_run_dir(out_dir, KIND, resolved, legacy=_LEGACY)
    write_json(run.path / "run.json", {"config": resolved, "fingerprint": run.fingerprint,
                                       **run_metadata(device, (config or {}).get("seed"))})
    counts = {"n": 0, "clean_correct": 0, "robust_correct": 0, "seconds": 0.0}
    model.eval()
    bar = tqdm(dataset.batches(batch_size, limit=limit), total=n_batches, desc="attack",
               disable=not progress, leave=False)
    summary: dict[str, Any] = {}
    for b, (x, y) in enumerate(bar):
        t, seconds = _shard(run, b, x, y, lambda xb, yb: _craft(model, attack, xb, yb, device),
                            b * batch_size if png else None)
        counts["seconds"] += seconds
        ok = t["pred"] == t["y"]
        counts["n"] += len(t["y"])
        counts["clean_correct"] += int(ok.sum())
        counts["robust_correct"] += int((ok & (t["pred_adv"] == t["y"])).sum())
        summary = {**counts, "clean_accuracy": counts["clean_correct"] / counts["n"],
                   "robust_accuracy": counts["robust_correct"] / counts["n"],
                   "batches_done": b + 1, "batches_total": n_batches,
                   "fingerprint": run.fingerprint, "config": resolved}
        write_json(run.path / "summary.json", summary)
    return summary


def load_adversarials(out_dir: str | Path) -> dict[str, torch.Tensor]:
    """Concatenate the shards listed by :func:`save_adversarials` (exact float tensors).

    Reads exactly the batches of the folder's configuration, never other files in it.

    Raises:
        UserInputError: not an attack folder, or an unfinished attack.
        CorruptFileError: a damaged manifest or shard.
    """
    run = read_run_dir(out_dir, KIND)
    try:
        n, bs = int(run.config["n_images"]), int(run.config["batch_size"])
    except (KeyError, TypeError, ValueError):
        raise CorruptFileError(f"{run.path / 'manifest.json'} lacks n_images/batch_size") from None
    names = [_shard_name(b) for b in range(-(-n // bs))]
    done = sum(run.entry(s) is not None for s in names)
    if done < len(names):
        raise UserInputError(f"{run.path}: the attack is unfinished ({done} of {len(names)} "
                             "batches); rerun the same `advimage attack` command to finish it")
    parts = [_read_shard(run.verified(s)) for s in names]
    out = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    if len(out["x_adv"]) != n:
        raise CorruptFileError(f"{run.path}: the shards hold {len(out['x_adv'])} images, the "
                               f"manifest {n}")
    return out
