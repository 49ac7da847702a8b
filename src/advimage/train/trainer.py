"""Supervised training with per-epoch checkpoints and exact resume.

SGD with (Nesterov) momentum, a cosine learning-rate schedule with linear warm-up and weight
decay on weights only. Every epoch writes ``state.safetensors`` (weights + optimizer buffers)
and ``state.json`` (epoch, history); the data order and augmentation of epoch ``e`` depend only
on ``(seed, e)``, so an interrupted run resumed from its last checkpoint ends with the same
weights as an uninterrupted one. Nothing is ever unpickled.

Other objectives (e.g. knowledge distillation, ``advimage.studies.distill``) reuse this one loop
through ``loss_hook`` (the per-batch loss), ``extra_modules`` (trained alongside the model, saved
in the per-epoch state) and ``run_info`` (recorded in the checkpoint, checked on resume).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from advimage.attacks.pgd import PGD
from advimage.data import ColorJitter, Compose, load_dataset, standard_augmentation
from advimage.errors import ConfigMismatchError
from advimage.models.accuracy import evaluate_accuracy
from advimage.models import ImageClassifier, create_model, save_checkpoint
from advimage.tracking import log_scalars
from advimage.train.config import TrainConfig
from advimage.train.state import (
    check_finite_loss,
    check_finite_state,
    load_train_state,
    read_train_meta,
    save_train_state,
)
from advimage.utils import resolve_device, run_metadata, seed_everything, write_json

__all__ = ["train", "build_optimizer", "lr_at", "save_train_state", "load_train_state"]

log = logging.getLogger(__name__)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD with weight decay on conv/linear weights only (not on biases and norm parameters)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() > 1 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warm-up to ``peak`` then cosine decay to 0 (per optimizer step)."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * peak * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _augmentation(cfg: TrainConfig, dataset: str) -> Compose | None:
    if cfg.augment == "none":
        return None
    base = standard_augmentation(dataset)  # always a Compose
    if cfg.augment == "jitter":
        return Compose([base, ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4)])
    return base


# Per-batch objective: (model, images (B, C, H, W), labels (B,)) -> (scalar loss, logits (B, K)).
LossHook = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    device: str | torch.device = "auto",
    resume: bool = True,
    progress: bool = True,
    loss_hook: LossHook | None = None,
    extra_modules: nn.Module | None = None,
    run_info: dict[str, Any] | None = None,
    model_init: Callable[[ImageClassifier], None] | None = None,
) -> tuple[ImageClassifier, dict[str, Any]]:
    """Train ``cfg.model`` on ``cfg.dataset``; returns the model and the final metrics.

    ``out_dir`` receives ``config.json``, per-epoch ``state.*`` and ``metrics.jsonl``, and at the
    end ``model.safetensors`` + ``model.json`` (a regular advimage checkpoint).

    Args:
        loss_hook: replaces cross-entropy; called as ``loss_hook(model, x, y)`` on each
            (augmented, on-device) batch and returns ``(loss, logits)``.
        extra_modules: trainable modules the hook uses (e.g. a FitNets regressor); optimized
            with the model and saved in the per-epoch state.
        run_info: JSON-serializable facts about the run (e.g. the distillation arm), merged into
            the checkpoint sidecar; resuming a directory with different ``run_info`` raises.
        model_init: called once on the freshly created model (CPU, before the optimizer), e.g.
            to initialise it from a pre-trained encoder; record what it loads in ``run_info``.

    With ``cfg.adv_eps > 0`` every batch is replaced by its PGD-L-inf adversarial (random start,
    ``cfg.adv_steps`` steps, crafted with the model in eval mode) before the loss: Madry et al.'s
    adversarial training, with any ``loss_hook`` applied to the adversarial batch.
    """
    run_info = dict(run_info or {})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    seed_everything(cfg.seed)

    train_ds = load_dataset(cfg.dataset, "train", data_root=cfg.data_root)
    test_ds = load_dataset(cfg.dataset, "test", data_root=cfg.data_root)
    if cfg.train_limit is not None:  # class-balanced subsets (CIFAR-10's order is by class)
        train_ds = train_ds.balanced(cfg.train_limit)
    if cfg.test_limit is not None:
        test_ds = test_ds.balanced(cfg.test_limit)
    model = create_model(cfg.model, num_classes=train_ds.num_classes, **cfg.model_kwargs)
    model.classes = list(train_ds.classes)
    if model_init is not None:
        model_init(model)
    model.to(dev)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if extra_modules is not None:
        extra_modules.to(dev)
        opt = build_optimizer(nn.ModuleList([model, extra_modules]), cfg)
    else:
        opt = build_optimizer(model, cfg)
    aug = _augmentation(cfg, cfg.dataset)
    adversary = None
    if cfg.adv_eps > 0:
        step = cfg.adv_step_size or 2.5 * cfg.adv_eps / cfg.adv_steps  # [0, 1] scale per step
        adversary = PGD(eps=cfg.adv_eps, norm="linf", steps=cfg.adv_steps, step_size=step,
                        early_stop=False)

    n_train = len(train_ds)
    steps_per_epoch = n_train // cfg.batch_size or 1
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)

    start_epoch, history = 0, []
    if resume and (out / "state.json").exists():
        saved = read_train_meta(out)  # checked before any tensor loads
        if saved.get("config") != cfg.to_dict() or saved.get("run_info", {}) != run_info:
            raise ConfigMismatchError(
                f"{out} holds a run with another configuration; use a new --out "
                "directory or the same options to resume"
            )
        meta = load_train_state(out, model, opt, dev, extra_modules)
        start_epoch, history = meta["epoch"], meta["history"]
        log.info("resuming %s at epoch %d", out, start_epoch)
    info = {"train": cfg.to_dict(), **run_metadata(dev, cfg.seed)}
    if run_info:
        info["run_info"] = run_info
    write_json(out / "config.json", info)

    t_start = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        if extra_modules is not None:
            extra_modules.train()
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        batches = train_ds.batches(
            cfg.batch_size,
            shuffle=True,
            seed=cfg.seed * 100_003 + epoch,
            drop_last=n_train >= cfg.batch_size,
        )
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(
            batches,
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not progress,
            leave=False,
        )
        t0 = time.time()
        for i, (x, y) in enumerate(bar):
            step = epoch * steps_per_epoch + i
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total_steps, warmup_steps, cfg.lr)
            if aug is not None:
                x = aug(x, gen)
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if adversary is not None:  # PGD adversarial training: the attack restores train mode
                seed = (cfg.seed * 100_003 + epoch) * 100_003 + i  # fresh random start per step
                x = dataclasses.replace(adversary, seed=seed)(model, x, y)
            if loss_hook is None:
                logits = model(x)  # (B, K)
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            else:
                loss, logits = loss_hook(model, x, y)
            check_finite_loss(loss, epoch + 1, out, last_good=epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        check_finite_state([model, extra_modules], opt, epoch + 1, out, last_good=epoch)
        test_acc = evaluate_accuracy(model, test_ds.batches(512), dev)
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": correct / max(seen, 1),
            "test_acc": test_acc,
            "lr": opt.param_groups[0]["lr"],
            "seconds": time.time() - t0,
        }
        history.append(record)
        log_scalars(epoch + 1, record, "train")  # --track: a no-op unless one is active
        log.info(
            "epoch %d: loss %.4f train %.4f test %.4f (%.0fs)",
            epoch + 1,
            record["train_loss"],
            record["train_acc"],
            test_acc,
            record["seconds"],
        )
        with open(out / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        state_meta = {"epoch": epoch + 1, "history": history, "config": cfg.to_dict()}
        if run_info:
            state_meta["run_info"] = run_info
        save_train_state(out, model, opt, state_meta, extra_modules)

    model.eval()
    final_acc = (
        history[-1]["test_acc"] if history else evaluate_accuracy(model, test_ds.batches(512), dev)
    )
    metrics = {
        "test_accuracy": final_acc,
        "epochs": cfg.epochs,
        "train_seconds_this_session": time.time() - t_start,
        "train_seconds_total": sum(h["seconds"] for h in history),
        "test_images": len(test_ds),
    }
    model.to(memory_format=torch.contiguous_format)
    save_checkpoint(
        model.cpu(),
        out / "model.safetensors",
        meta={
            "dataset": cfg.dataset,
            "accuracy": final_acc,
            "train_config": cfg.to_dict(),
            "seed": cfg.seed,
            "history": history,
            **run_info,
        },
    )
    write_json(out / "metrics.json", metrics)
    return model, metrics
