"""The training recipe's pieces: optimizer, learning-rate schedule, augmentation, PGD adversary.

SGD with (Nesterov) momentum and weight decay on weights only; linear warm-up then cosine decay
(Loshchilov & Hutter, ICLR 2017); the dataset's standard augmentation, optionally with colour
jitter; and for adversarial training the PGD-L-inf adversary of Madry et al. (ICLR 2018).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from advimage.attacks.pgd import PGD
from advimage.data import ColorJitter, Compose, standard_augmentation
from advimage.train.config import TrainConfig

__all__ = ["COLOR_JITTER", "adversary", "augmentation", "build_optimizer", "lr_at"]

# augment="jitter": brightness/contrast/saturation factors drawn uniformly in [0.6, 1.4] (unitless)
COLOR_JITTER: dict[str, float] = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4}


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD with weight decay on conv/linear weights only (not on biases and norm parameters).

    Args:
        model: the trained module(s); parameters without ``requires_grad`` are left out.
        cfg: ``lr``, ``momentum``, ``nesterov`` and ``weight_decay`` of the recipe.

    Returns:
        The optimizer, with the decayed group first and the undecayed one second.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
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
    """Linear warm-up to ``peak`` then cosine decay to 0 (per optimizer step).

    Args:
        step: the optimizer step, 0-based over the whole run.
        total_steps: steps of the whole run.
        warmup_steps: steps of the linear warm-up (0: none).
        peak: the learning rate reached at the end of the warm-up.

    Returns:
        The learning rate of ``step``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * peak * (1.0 + math.cos(math.pi * min(1.0, progress)))


def augmentation(cfg: TrainConfig, dataset: str) -> Compose | None:
    """The training batches' augmentation for ``cfg.augment`` (None for ``"none"``).

    Args:
        cfg: the recipe (``augment``: ``standard``, ``none`` or ``jitter``).
        dataset: the dataset name whose standard augmentation is used.
    """
    if cfg.augment == "none":
        return None
    base = standard_augmentation(dataset)  # always a Compose
    if cfg.augment == "jitter":
        return Compose([base, ColorJitter(**COLOR_JITTER)])
    return base


def adversary(cfg: TrainConfig) -> PGD | None:
    """Madry et al.'s PGD-L-inf adversary for ``cfg.adv_eps > 0``, else None.

    Random start, ``cfg.adv_steps`` steps of ``cfg.adv_step_size`` (default
    ``2.5 * adv_eps / adv_steps``, on the [0, 1] scale), no early stop; the trainer gives each
    batch its own seed.
    """
    if cfg.adv_eps <= 0:
        return None
    step = cfg.adv_step_size or 2.5 * cfg.adv_eps / cfg.adv_steps  # [0, 1] scale per step
    return PGD(eps=cfg.adv_eps, norm="linf", steps=cfg.adv_steps, step_size=step,
               early_stop=False)
