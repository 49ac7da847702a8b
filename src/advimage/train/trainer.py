"""Supervised training with per-epoch checkpoints and exact resume.

SGD with (Nesterov) momentum, a cosine learning-rate schedule with linear warm-up and weight
decay on weights only (:mod:`advimage.train.recipe`); optionally PGD adversarial training (Madry
et al., ICLR 2018). Every epoch writes ``state.safetensors`` (weights + optimizer buffers) and
``state.json`` (epoch, history); the data order and augmentation of epoch ``e`` depend only on
``(seed, e)``, so an interrupted run resumed from its last checkpoint ends with the same weights
as an uninterrupted one. Nothing is ever unpickled.

Other objectives (e.g. knowledge distillation, ``advimage.studies.distill``) reuse this one loop
through ``loss_hook`` (the per-batch loss), ``extra_modules`` (trained alongside the model, saved
in the per-epoch state) and ``run_info`` (recorded in the checkpoint, checked on resume). Under
``torchrun`` the loop is data-parallel (:mod:`advimage.train.distributed`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from advimage.attacks.pgd import PGD
from advimage.data import Compose, ImageDataset, load_dataset
from advimage.errors import ConfigMismatchError
from advimage.models import ImageClassifier, create_model, save_checkpoint
from advimage.models.accuracy import evaluate_accuracy
from advimage.tracking import log_scalars
from advimage.train.config import TrainConfig
from advimage.train.distributed import DistContext, is_main, setup
from advimage.train.recipe import adversary, augmentation, build_optimizer, lr_at
from advimage.train.state import (
    check_finite_loss,
    check_finite_state,
    load_train_state,
    read_train_meta,
    save_train_state,
)
from advimage.utils import resolve_device, run_metadata, seed_everything, write_json

__all__ = ["LossHook", "train", "build_optimizer", "lr_at", "save_train_state",
           "load_train_state"]

log = logging.getLogger(__name__)

# Per-batch objective: (model, images (B, C, H, W), labels (B,)) -> (scalar loss, logits (B, K)).
LossHook = Callable[[nn.Module, Tensor, Tensor], tuple[Tensor, Tensor]]
_EVAL_BATCH = 512  # images per test-accuracy batch


@dataclass
class _Run:
    """Everything one training run works with, built once by :func:`_prepare`."""

    cfg: TrainConfig
    out: Path
    device: torch.device
    model: ImageClassifier
    extra: nn.Module | None
    opt: torch.optim.SGD
    train_ds: ImageDataset
    test_ds: ImageDataset
    aug: Compose | None
    adversary: PGD | None
    net: nn.Module  # what the steps call: the model, or its DDP wrapper under torchrun
    loss_hook: LossHook | None = None  # None: cross-entropy with cfg.label_smoothing
    run_info: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    dist: DistContext | None = None  # under torchrun

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch (at least 1)."""
        return len(self.train_ds) // self.cfg.batch_size or 1


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

    With ``cfg.adv_eps > 0`` every batch is replaced by its PGD-L-inf adversarial (random start,
    ``cfg.adv_steps`` steps, crafted with the model in eval mode) before the loss: Madry et al.'s
    adversarial training (ICLR 2018), with any ``loss_hook`` applied to the adversarial batch.

    Args:
        cfg: the recipe (model, data, schedule, seed).
        out_dir: the run folder; an existing one of the same configuration is resumed.
        device: ``auto``, ``cpu``, ``cuda`` or a torch device.
        resume: continue from ``out_dir``'s last finished epoch when it holds one.
        progress: show a progress bar per epoch.
        loss_hook: replaces cross-entropy; called as ``loss_hook(model, x, y)`` on each
            (augmented, on-device) batch and returns ``(loss, logits)``.
        extra_modules: trainable modules the hook uses (e.g. a FitNets regressor); optimized
            with the model and saved in the per-epoch state.
        run_info: JSON-serializable facts about the run (e.g. the distillation arm), merged into
            the checkpoint sidecar; resuming a directory with different ``run_info`` raises.
        model_init: called once on the freshly created model (CPU, before the optimizer), e.g.
            to initialise it from a pre-trained encoder; record what it loads in ``run_info``.

    Raises:
        ConfigMismatchError: ``out_dir`` holds a run of another configuration or ``run_info``.
        TrainingDivergedError: a loss or the weights turned NaN/inf (the last good state stays).
    """
    out = Path(out_dir)
    ctx, dev = setup(cfg.batch_size, resolve_device(device))  # torchrun: join its group
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    run = _prepare(cfg, out, dev, extra_modules, model_init)
    run.loss_hook, run.run_info, run.progress = loss_hook, dict(run_info or {}), progress
    run.dist, run.net = ctx, run.net if ctx is None else ctx.wrap(run.model, dev, loss_hook)
    start_epoch, history = 0, cast(list[dict[str, Any]], [])
    if resume and (out / "state.json").exists():
        start_epoch, history = _resume(run)
    info = {"train": cfg.to_dict(), **run_metadata(dev, cfg.seed)}
    if run.run_info:
        info["run_info"] = run.run_info
    if is_main(ctx):
        write_json(out / "config.json", info)
    t_start = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        _run_epoch(run, epoch, history)
    return run.model, _finish(run, history, t_start)


def _prepare(
    cfg: TrainConfig, out: Path, dev: torch.device, extra: nn.Module | None,
    model_init: Callable[[ImageClassifier], None] | None,
) -> _Run:
    """Data, model (created after seeding, so its initialisation depends only on the seed),
    optimizer, augmentation and adversary, in the order that fixes the RNG's consumption."""
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
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if extra is not None:
        extra.to(dev)
    opt = build_optimizer(model if extra is None else nn.ModuleList([model, extra]), cfg)
    return _Run(cfg=cfg, out=out, device=dev, model=model, extra=extra, opt=opt,
                train_ds=train_ds, test_ds=test_ds, aug=augmentation(cfg, cfg.dataset),
                adversary=adversary(cfg), net=model)


def _resume(run: _Run) -> tuple[int, list[dict[str, Any]]]:
    """Load ``run.out``'s last finished epoch; returns (epochs done, their history)."""
    saved = read_train_meta(run.out) or {}  # checked before any tensor loads
    if saved.get("config") != run.cfg.to_dict() or saved.get("run_info", {}) != run.run_info:
        raise ConfigMismatchError(
            f"{run.out} holds a run with another configuration; use a new --out "
            "directory or the same options to resume"
        )
    meta = load_train_state(run.out, run.model, run.opt, run.device, run.extra)
    log.info("resuming %s at epoch %d", run.out, meta["epoch"])
    return meta["epoch"], meta["history"]


def _run_epoch(run: _Run, epoch: int, history: list[dict[str, Any]]) -> None:
    """Train epoch ``epoch`` (0-based), evaluate, append its record to ``history``, checkpoint."""
    t0 = time.time()
    loss_sum, correct, seen = _train_epoch(run, epoch)
    check_finite_state([run.model, run.extra], run.opt, epoch + 1, run.out, last_good=epoch)
    test_acc = _test_accuracy(run)
    record = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
              "train_acc": correct / max(seen, 1), "test_acc": test_acc,
              "lr": run.opt.param_groups[0]["lr"], "seconds": time.time() - t0}
    history.append(record)
    log.info("epoch %d: loss %.4f train %.4f test %.4f (%.0fs)", epoch + 1,
             record["train_loss"], record["train_acc"], test_acc, record["seconds"])
    if not is_main(run.dist):
        return
    log_scalars(epoch + 1, record, "train")  # --track: a no-op unless one is active
    with open(run.out / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    state_meta = {"epoch": epoch + 1, "history": history, "config": run.cfg.to_dict()}
    if run.run_info:
        state_meta["run_info"] = run.run_info
    save_train_state(run.out, run.model, run.opt, state_meta, run.extra)


def _train_epoch(run: _Run, epoch: int) -> tuple[float, int, int]:
    """One pass over the training batches; returns (summed loss, correct, images seen).

    The batch order and the augmentation's generator depend only on ``(seed, epoch)``.
    """
    cfg = run.cfg
    run.model.train()
    if run.extra is not None:
        run.extra.train()
    epoch_seed = cfg.seed * 100_003 + epoch
    gen = torch.Generator().manual_seed(epoch_seed)
    batches = run.train_ds.batches(cfg.batch_size, shuffle=True, seed=epoch_seed,
                                   drop_last=len(run.train_ds) >= cfg.batch_size)
    bar = tqdm(batches, total=run.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
               disable=not run.progress, leave=False)
    loss_sum, correct, seen = 0.0, 0, 0
    for i, (x, y) in enumerate(bar):
        loss, logits, y = _train_step(run, epoch, i, x, y, gen)
        loss_sum += float(loss.detach()) * len(y)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
    if run.dist is not None:  # every rank's share: the global batches' numbers
        return run.dist.totals(loss_sum, correct, seen)
    return loss_sum, correct, seen


def _train_step(
    run: _Run, epoch: int, i: int, x: Tensor, y: Tensor, gen: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Batch ``i`` of ``epoch``: schedule, augment, (attack,) loss, step.

    Returns:
        The loss, the logits (B, K) and the on-device labels (B,).
    """
    cfg = run.cfg
    total_steps = run.steps_per_epoch * cfg.epochs
    warmup_steps = int(cfg.warmup_epochs * run.steps_per_epoch)
    for g in run.opt.param_groups:
        g["lr"] = lr_at(epoch * run.steps_per_epoch + i, total_steps, warmup_steps, cfg.lr)
    if run.aug is not None:
        x = run.aug(x, gen)
    if run.dist is not None:  # this rank's share of the global batch, after its augmentation
        x, y = run.dist.share(x), run.dist.share(y)
    x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if run.adversary is not None:  # PGD adversarial training: the attack restores train mode
        seed = (cfg.seed * 100_003 + epoch) * 100_003 + i  # fresh random start per step
        x = dataclasses.replace(run.adversary, seed=seed)(run.model, x, y)
    if run.loss_hook is None:
        logits = run.net(x)  # (B, K)
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    else:
        loss, logits = run.loss_hook(run.net, x, y)
    check_finite_loss(loss, epoch + 1, run.out, last_good=epoch)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    if run.dist is not None:  # what DDP does not: the extra modules, a hook-trained model
        run.dist.average_grads(run.extra, None if run.net is not run.model else run.model)
    run.opt.step()
    return loss, logits, y


def _test_accuracy(run: _Run) -> float:
    """Top-1 accuracy of the model on the run's test set."""
    return evaluate_accuracy(run.model, run.test_ds.batches(_EVAL_BATCH), run.device)


def _finish(run: _Run, history: list[dict[str, Any]], t_start: float) -> dict[str, Any]:
    """Write ``model.safetensors`` + ``model.json`` and ``metrics.json``; returns the metrics.

    The model ends in eval mode, contiguous and on the CPU.
    """
    cfg, model = run.cfg, run.model
    model.eval()
    final_acc = history[-1]["test_acc"] if history else _test_accuracy(run)
    metrics = {"test_accuracy": final_acc, "epochs": cfg.epochs,
               "train_seconds_this_session": time.time() - t_start,
               "train_seconds_total": sum(h["seconds"] for h in history),
               "test_images": len(run.test_ds)}
    model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    run.net = run.model  # drop the DDP wrapper before leaving the process group
    if run.dist is not None and not run.dist.finish():  # off rank 0: nothing to write
        return metrics
    meta = {"dataset": cfg.dataset, "accuracy": final_acc, "train_config": cfg.to_dict(),
            "seed": cfg.seed, "history": history, **run.run_info}
    save_checkpoint(model.cpu(), run.out / "model.safetensors", meta=meta)
    write_json(run.out / "metrics.json", metrics)
    return metrics
