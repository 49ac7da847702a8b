"""Pre-training of NIM / MIM autoencoders (You et al., NeurIPS 2023, "Beyond Pretrained
Features: Noisy Image Modeling Provides Adversarial Defense"; MAE recipe of He et al., 2022).

AdamW (betas 0.9/0.95, weight decay 0.05 on weights only) with linear warm-up and cosine decay
per step. Every epoch writes ``state.safetensors`` + ``state.json`` in the trainer's style
(:mod:`advimage.train.trainer`); the data order, noise levels, noise and masks of epoch ``e``
depend only on ``(seed, e)``, so a resumed run ends with the same weights as an uninterrupted
one. The final model goes to ``nim.safetensors`` + ``nim.json`` (:func:`save_nim`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from advimage.defend.nim.io import save_nim
from advimage.defend.nim.model import NIMAutoencoder, NIMConfig
from advimage.errors import ConfigMismatchError
from advimage.tracking import log_scalars
from advimage.train.config import check_int, check_range
from advimage.train.state import (
    check_finite_loss,
    check_finite_state,
    load_train_state,
    read_train_meta,
    save_train_state,
)
from advimage.train.trainer import lr_at
from advimage.utils import resolve_device
from advimage.validation import check_images

__all__ = ["pretrain"]

log = logging.getLogger(__name__)


def _check_inputs(config: NIMConfig, images: Tensor) -> None:
    check_images(images, "images")
    want = (config.in_channels, *config.image_size)
    if tuple(images.shape[1:]) != want:
        raise ValueError(f"images have shape {tuple(images.shape[1:])}, config expects {want}")


def _log_epoch(record: dict[str, Any]) -> None:
    """One epoch's record to the tracker (``--track``; else a no-op) and the log."""
    log_scalars(record["epoch"], record, "pretrain")
    log.info("nim epoch %d: loss %.4f (%.0f imgs/s)", record["epoch"], record["loss"],
             record["imgs_per_s"])


def _steps(n: int, batch_size: int, epochs: int,
           warmup_epochs: float) -> tuple[int, int, int, int]:
    """``(batch size, steps per epoch, total steps, warm-up steps)``; partial batches dropped."""
    bs = min(batch_size, n)
    steps_per_epoch = n // bs
    return bs, steps_per_epoch, steps_per_epoch * epochs, int(warmup_epochs * steps_per_epoch)


def _check_schedule(epochs: int, batch_size: int, lr: float, weight_decay: float,
                    warmup_epochs: float) -> None:
    check_int("epochs", epochs, 1)
    check_int("batch_size", batch_size, 1)
    check_range("lr", lr, 0, None, low_open=True)
    check_range("weight_decay", weight_decay, 0, None)
    check_range("warmup_epochs", warmup_epochs, 0, epochs,
                why=f"longer than the {epochs} training epoch(s)")


def _adamw(model: NIMAutoencoder, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with decay on weight matrices only (biases, norms and tokens undecayed)."""
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr,
                             betas=(0.9, 0.95))


def _epoch(model: NIMAutoencoder, opt: torch.optim.Optimizer, images: Tensor, order: Tensor,
           epoch: int, bs: int, schedule: tuple[int, int, float], dev: torch.device,
           out: Path) -> float:
    """One epoch of pretraining over ``order``; returns the sum of the batch losses."""
    total, warmup, lr = schedule
    steps_per_epoch = len(order) // bs
    loss_sum = 0.0
    for i in range(steps_per_epoch):
        for g in opt.param_groups:
            g["lr"] = lr_at(epoch * steps_per_epoch + i, total, warmup, lr)
        loss, _ = model(images[order[i * bs:(i + 1) * bs]].to(dev))
        check_finite_loss(loss, epoch + 1, out, last_good=epoch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += float(loss.detach())
    return loss_sum


def _resume(out: Path, model: NIMAutoencoder, opt: torch.optim.Optimizer, dev: torch.device,
            settings: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """``(first epoch, history)`` of a run saved in ``out`` with the same settings, else (0, [])."""
    if not (out / "state.json").exists():
        return 0, []
    saved = read_train_meta(out)  # checked before any tensor loads
    if saved.get("settings") != settings:
        raise ConfigMismatchError(
            f"{out} holds a NIM run with other settings; use a new directory")
    meta = load_train_state(out, model, opt, dev)
    log.info("resuming %s at epoch %d", out, meta["epoch"])
    return meta["epoch"], meta["history"]


def pretrain(
    config: NIMConfig,
    images: Tensor,
    out_dir: str | Path,
    *,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    warmup_epochs: float = 1.0,
    seed: int = 0,
    resume: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[NIMAutoencoder, list[dict[str, Any]]]:
    """Pre-train a NIM (or MIM, ``config.mode``) autoencoder on ``images`` (N, C, H, W) in [0, 1].

    Args:
        config: architecture, corruption and image size (must match ``images``).
        images: the training images (CPU tensor).
        out_dir: receives per-epoch ``state.*`` and the final ``nim.*``.
        epochs, batch_size: the schedule (the last partial batch is dropped).
        lr: peak learning rate; weight_decay: AdamW decay on weight matrices.
        warmup_epochs: linear warm-up length in epochs.
        seed: seeds initialization and every epoch's shuffling and corruption.
        resume: continue from ``out_dir/state.json`` when it exists (same settings only).
        device: where the model trains (``"auto"`` picks CUDA when present).

    Returns:
        ``(model, history)``; history holds ``{"epoch", "loss", "lr", "seconds", "imgs_per_s"}``.
    """
    _check_inputs(config, images)
    _check_schedule(epochs, batch_size, lr, weight_decay, warmup_epochs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    model = NIMAutoencoder(config).to(dev)
    opt = _adamw(model, lr, weight_decay)
    settings = {"config": config.to_dict(), "epochs": epochs, "batch_size": batch_size,
                "lr": lr, "weight_decay": weight_decay, "warmup_epochs": warmup_epochs,
                "seed": seed, "n_images": int(images.shape[0])}
    bs, steps_per_epoch, total, warmup = _steps(len(images), batch_size, epochs, warmup_epochs)
    start, history = _resume(out, model, opt, dev, settings) if resume else (0, [])
    for epoch in range(start, epochs):
        model.train()
        torch.manual_seed(seed * 100_003 + epoch)  # order, sigma, noise and masks of this epoch
        order = torch.randperm(len(images))
        t0 = time.time()
        loss_sum = _epoch(model, opt, images, order, epoch, bs, (total, warmup, lr), dev, out)
        check_finite_state([model], opt, epoch + 1, out, last_good=epoch)
        seconds = time.time() - t0
        history.append({"epoch": epoch + 1, "loss": loss_sum / steps_per_epoch,
                        "lr": opt.param_groups[0]["lr"], "seconds": seconds,
                        "imgs_per_s": steps_per_epoch * bs / max(seconds, 1e-9)})
        _log_epoch(history[-1])
        save_train_state(out, model, opt, {"epoch": epoch + 1, "history": history,
                                      "settings": settings})
    model.eval()
    save_nim(model, out / "nim", meta={"history": history, "settings": settings})
    return model, history
