"""Pre-training of NIM / MIM autoencoders (You et al., NeurIPS 2023, "Beyond Pretrained
Features: Noisy Image Modeling Provides Adversarial Defense"; MAE recipe of He et al., 2022).

AdamW (betas 0.9/0.95, weight decay 0.05 on weights only) with linear warm-up and cosine decay
per step. Every epoch writes ``state.safetensors`` + ``state.json`` in the trainer's style
(:mod:`advimage.train.trainer`); the data order, noise levels, noise and masks of epoch ``e``
depend only on ``(seed, e)``, so a resumed run ends with the same weights as an uninterrupted
one. The final model goes to ``nim.safetensors`` + ``nim.json`` (:func:`save_nim`).

Under ``torchrun --nproc-per-node N`` the loop is data-parallel through
:mod:`advimage.train.distributed` (as ``advimage train``): every process walks the same seeded
global batches of ``batch_size`` images, draws the corruption (sigma and noise, or the mask) for
the whole global batch with the same seeded generator, and trains on its contiguous share, so each
image gets exactly the noise it gets in a single process; DDP averages the equal shares'
gradients, i.e. the gradient of the global mean loss (the model has LayerNorm only, no BatchNorm
and no dropout). Rank 0 alone logs, checkpoints and writes the final model; every rank resumes
from the same ``state.safetensors`` (and a run saved by N processes resumes with any number
that divides the batch).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from advimage.defend.nim.io import save_nim
from advimage.defend.nim.model import NIMAutoencoder, NIMConfig
from advimage.errors import ConfigMismatchError
from advimage.tracking import log_scalars
from advimage.train.config import check_int, check_range
from advimage.train.distributed import DistContext, is_main, setup
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


class _Objective(nn.Module):
    """The NIM (or MIM) loss of rows whose corruption was drawn for the whole global batch.

    :meth:`NIMAutoencoder.forward` draws the corruption for the rows it gets; under torchrun a
    rank gets a share, so every rank draws for the global batch
    (:meth:`NIMAutoencoder.draw_corruption`, ``forward``'s own draws) and passes its rows
    here, to ``forward``'s own loss (:meth:`NIMAutoencoder.corrupted_loss`); DDP wraps this
    module (one process calls ``forward`` itself).
    """

    def __init__(self, nim: NIMAutoencoder) -> None:
        super().__init__()
        self.nim = nim

    def forward(self, x: Tensor, sigma: Tensor | None, noise: Tensor | None,
                mask: Tensor | None) -> Tensor:
        """The loss of clean rows ``x`` (B, C, H, W) under their share of the draws."""
        return self.nim.corrupted_loss(x, sigma, noise, mask)[0]


@dataclass
class _Run:
    """What every step of one pretraining run works with."""

    model: NIMAutoencoder
    net: nn.Module  # under torchrun the DDP-wrapped objective (else the model)
    opt: torch.optim.Optimizer
    images: Tensor  # (N, C, H, W), CPU
    bs: int  # global batch
    schedule: tuple[int, int, float]  # (total steps, warm-up steps, peak lr)
    dev: torch.device
    out: Path
    dist: DistContext | None


def _epoch(run: _Run, order: Tensor, epoch: int) -> float:
    """One epoch over ``order``; returns the sum of the global batches' losses.

    One process calls ``forward``, which draws the corruption. Under torchrun every rank draws
    the whole global batch's (same seed, same calls) and trains on its contiguous share; DDP
    averages the equal shares' gradients.
    """
    total, warmup, lr = run.schedule
    steps_per_epoch = len(order) // run.bs
    loss_sum = 0.0
    for i in range(steps_per_epoch):
        for g in run.opt.param_groups:
            g["lr"] = lr_at(epoch * steps_per_epoch + i, total, warmup, lr)
        x = run.images[order[i * run.bs:(i + 1) * run.bs]].to(run.dev)  # global batch
        if run.dist is None:  # one process: the model draws its own corruption
            loss, _ = run.model(x)
        else:  # the global batch's draws, this rank's rows of everything
            ctx = run.dist
            loss = run.net(*(None if t is None else ctx.share(t)
                             for t in (x, *run.model.draw_corruption(x))))
        check_finite_loss(loss, epoch + 1, run.out, last_good=epoch)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        loss_sum += float(loss.detach())
    return loss_sum if run.dist is None else run.dist.mean(loss_sum)


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


def _wrap(model: NIMAutoencoder, ctx: DistContext | None, dev: torch.device) -> nn.Module:
    """Under torchrun the DDP-wrapped :class:`_Objective`; else the model itself."""
    if ctx is None:
        return model
    if model.config.mode == "nim":  # DDP needs a gradient for every trainable parameter; NIM
        model.mask_token.requires_grad_(False)  # never uses this one and AdamW skips it anyway
    return ctx.wrap(_Objective(model), dev)


def _train_epoch(run: _Run, epoch: int, seed: int, steps_per_epoch: int) -> dict[str, Any]:
    """Epoch ``epoch`` (0-based) with its seeded order and corruption; returns its record."""
    run.model.train()
    torch.manual_seed(seed * 100_003 + epoch)  # order, sigma, noise and masks of this epoch
    order = torch.randperm(len(run.images))
    t0 = time.time()
    loss_sum = _epoch(run, order, epoch)
    check_finite_state([run.model], run.opt, epoch + 1, run.out, last_good=epoch)
    seconds = time.time() - t0
    return {"epoch": epoch + 1, "loss": loss_sum / steps_per_epoch,
            "lr": run.opt.param_groups[0]["lr"], "seconds": seconds,
            "imgs_per_s": steps_per_epoch * run.bs / max(seconds, 1e-9)}


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
        epochs, batch_size: the schedule (the last partial batch is dropped); under torchrun
            ``batch_size`` is the global batch, split evenly over the processes.
        lr: peak learning rate; weight_decay: AdamW decay on weight matrices.
        warmup_epochs: linear warm-up length in epochs.
        seed: seeds initialization and every epoch's shuffling and corruption.
        resume: continue from ``out_dir/state.json`` when it exists (same settings only).
        device: where the model trains (``"auto"`` picks CUDA when present).

    Returns:
        ``(model, history)``; history holds ``{"epoch", "loss", "lr", "seconds", "imgs_per_s"}``.

    Raises:
        UserInputError: under torchrun, a global batch the world size does not divide.
        ConfigMismatchError: ``out_dir`` holds a run with other settings.
    """
    _check_inputs(config, images)
    _check_schedule(epochs, batch_size, lr, weight_decay, warmup_epochs)
    bs, steps_per_epoch, total, warmup = _steps(len(images), batch_size, epochs, warmup_epochs)
    ctx, dev = setup(bs, resolve_device(device))  # torchrun: join its group; nothing written yet
    (out := Path(out_dir)).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = NIMAutoencoder(config).to(dev)
    opt = _adamw(model, lr, weight_decay)
    settings = {"config": config.to_dict(), "epochs": epochs, "batch_size": batch_size,
                "lr": lr, "weight_decay": weight_decay, "warmup_epochs": warmup_epochs,
                "seed": seed, "n_images": int(images.shape[0])}
    start, history = _resume(out, model, opt, dev, settings) if resume else (0, [])
    run = _Run(model, _wrap(model, ctx, dev), opt, images, bs, (total, warmup, lr), dev, out, ctx)
    for epoch in range(start, epochs):
        history.append(_train_epoch(run, epoch, seed, steps_per_epoch))
        if is_main(ctx):  # rank 0 alone logs and checkpoints
            _log_epoch(history[-1])
            save_train_state(out, model, opt, {"epoch": epoch + 1, "history": history,
                                               "settings": settings})
    model.eval()
    run.net = model  # drop the DDP wrapper before leaving the process group
    if ctx is not None and not ctx.finish():  # off rank 0: nothing to write
        return model, history
    save_nim(model, out / "nim", meta={"history": history, "settings": settings})
    return model, history
