"""Craft adversarial images for a dataset and store them losslessly.

Per batch: the exact float32 tensors (``x_adv``, clean ``x``, labels, predictions) in a
safetensors shard, and 8-bit PNGs for viewing. Shards are written atomically, so an interrupted
run resumes by skipping finished shards; ``summary.json`` is rewritten after every batch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from advimage.utils import run_metadata, write_json

__all__ = ["save_adversarials", "load_adversarials"]


def _png(img: torch.Tensor, path: Path) -> None:
    arr = (img.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    arr = arr[0].numpy() if arr.shape[0] == 1 else arr.permute(1, 2, 0).numpy()
    Image.fromarray(np.ascontiguousarray(arr)).save(path)


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
    """Run ``attack`` over ``dataset``; write shards, PNGs and ``summary.json`` to ``out_dir``."""
    out = Path(out_dir)
    (out / "tensors").mkdir(parents=True, exist_ok=True)
    if png:
        (out / "png").mkdir(exist_ok=True)
    n_total = min(len(dataset), limit or len(dataset))
    n_batches = -(-n_total // batch_size)
    meta = {"config": config or {}, **run_metadata(device, (config or {}).get("seed"))}
    write_json(out / "run.json", meta)
    counts = {"n": 0, "clean_correct": 0, "robust_correct": 0, "seconds": 0.0}
    model.eval()
    bar = tqdm(
        dataset.batches(batch_size, limit=limit),
        total=n_batches,
        desc="attack",
        disable=not progress,
        leave=False,
    )
    for b, (x, y) in enumerate(bar):
        shard = out / "tensors" / f"batch_{b:05d}.safetensors"
        if shard.exists():  # finished before an interruption
            t = load_file(str(shard))
            pred, pred_adv, y_s = t["pred"], t["pred_adv"], t["y"]
        else:
            x, y = x.to(device), y.to(device)
            t0 = time.perf_counter()
            x_adv = attack(model, x, y)
            counts["seconds"] += time.perf_counter() - t0
            with torch.no_grad():
                pred = model(x).argmax(1)
                pred_adv = model(x_adv).argmax(1)
            y_s = y
            tensors = {
                "x": x.float().cpu().contiguous(),
                "x_adv": x_adv.float().cpu().contiguous(),
                "y": y.cpu(),
                "pred": pred.cpu(),
                "pred_adv": pred_adv.cpu(),
            }
            tmp = shard.with_suffix(".tmp")
            save_file(tensors, str(tmp))
            if png:
                for i in range(len(x_adv)):
                    _png(
                        x_adv[i],
                        out / "png" / f"{b * batch_size + i:06d}_y{int(y[i])}"
                        f"_p{int(pred_adv[i])}.png",
                    )
            tmp.replace(shard)
        ok = pred.cpu() == y_s.cpu()
        counts["n"] += len(y_s)
        counts["clean_correct"] += int(ok.sum())
        counts["robust_correct"] += int((ok & (pred_adv.cpu() == y_s.cpu())).sum())
        summary = {
            **counts,
            "clean_accuracy": counts["clean_correct"] / counts["n"],
            "robust_accuracy": counts["robust_correct"] / counts["n"],
            "batches_done": b + 1,
            "batches_total": n_batches,
            "config": config or {},
        }
        write_json(out / "summary.json", summary)
    return json.loads((out / "summary.json").read_text())


def load_adversarials(out_dir: str | Path) -> dict[str, torch.Tensor]:
    """Concatenate the shards written by :func:`save_adversarials` (exact float tensors)."""
    shards = sorted((Path(out_dir) / "tensors").glob("batch_*.safetensors"))
    if not shards:
        raise ValueError(f"no adversarial shards in {Path(out_dir) / 'tensors'}")
    parts = [load_file(str(s)) for s in shards]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
