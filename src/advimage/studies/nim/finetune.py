"""Fine-tuning a classifier on De^3 reconstructions (You et al., NeurIPS 2023, "Beyond Pretrained
Features: Noisy Image Modeling Provides Adversarial Defense", Sec. 4 / official ``finetune.py``).

The classifier (``nim-vit``, :mod:`advimage.models.nim_vit`) starts from the NIM encoder's
weights (the head is new) and is trained on what the De^3 defense will feed it: every image gets
Gaussian noise with its own level ``sigma ~ U(0, sigma_max)`` (0-255 scale; the paper uses
``U(0, 30)``), the FROZEN autoencoder reconstructs it exactly as
:meth:`advimage.defend.nim.defense.De3Defense.purify` does (un-normalized with the clean image's
patch statistics, clamped to [0, 1]) and the classifier is trained with cross-entropy on that.
A ``mode="mim"`` autoencoder gives the MIM baseline the same way (its encoder, its denoising).

Training runs through :func:`advimage.train.train` (SGD + Nesterov momentum, cosine schedule
with warm-up; the official code uses AdamW with layer decay, which this trainer does not offer).
Learning rate: on an H200, a default ``NIMConfig`` pre-trained 30 epochs on 10k CIFAR-10 images,
then fine-tuned 15 epochs at batch 128 (1 warm-up epoch) on them, reached clean test accuracy
0.525 / 0.549 / 0.559 / 0.522 / 0.488 at peak lr 0.005 / 0.01 / 0.02 / 0.05 / 0.1; hence the
CLI's default 0.02 (a small ViT with SGD diverges or stalls at the ResNet-style 0.1).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advimage.data import load_dataset
from advimage.defend.nim.defense import De3Defense, check_sigma_test
from advimage.defend.nim.io import load_nim
from advimage.defend.nim.model import NIMAutoencoder, NIMConfig
from advimage.eval.accuracy import evaluate_accuracy
from advimage.models import ImageClassifier
from advimage.models.nim_vit import POOLS
from advimage.train.config import TrainConfig
from advimage.train.distributed import is_rank_zero
from advimage.train.trainer import train
from advimage.utils import resolve_device, write_json

__all__ = ["NIMFinetuneLoss", "copy_encoder", "encoder_kwargs", "finetune", "nim_fingerprint"]

log = logging.getLogger(__name__)

ENCODER_PARTS = ("patch_embed", "cls_token", "pos_embed", "blocks", "norm")


def encoder_kwargs(config: NIMConfig, pool: str = "mean") -> dict[str, Any]:
    """``nim-vit`` factory kwargs for a classifier whose trunk matches ``config``'s encoder."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    return {"input_shape": [config.in_channels, *config.image_size],
            "patch_size": config.patch_size, "enc_dim": config.enc_dim,
            "enc_depth": config.enc_depth, "enc_heads": config.enc_heads,
            "mlp_ratio": config.mlp_ratio, "pool": pool}


def nim_fingerprint(nim: NIMAutoencoder) -> str:
    """sha256 over the autoencoder's config and state-dict tensors (name, dtype, shape, bytes)."""
    digest = hashlib.sha256(json.dumps(nim.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(nim.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def copy_encoder(nim: NIMAutoencoder, classifier: ImageClassifier) -> list[str]:
    """Copy the encoder's tensors into ``classifier.net`` (same names); returns the names copied.

    Everything but the head must be covered, with equal shapes; a mismatch is a ``ValueError``.
    """
    target = classifier.net.state_dict()
    source = {k: v for k, v in nim.state_dict().items() if k.split(".")[0] in ENCODER_PARTS}
    missing = sorted(k for k in target if k not in source and not k.startswith("head."))
    if missing or any(k not in target for k in source):
        extra = sorted(set(source) - set(target))
        raise ValueError(f"classifier and NIM encoder differ: missing {missing[:3]}, "
                         f"unexpected {extra[:3]}")
    for name, value in source.items():
        if target[name].shape != value.shape:
            raise ValueError(f"{name}: classifier has shape {tuple(target[name].shape)}, the NIM "
                             f"encoder {tuple(value.shape)}")
        target[name].copy_(value)  # state_dict tensors share storage with the parameters
    return sorted(source)


class NIMFinetuneLoss:
    """Trainer ``loss_hook``: noise ``sigma ~ U(0, sigma_max)`` per image, De^3 reconstruction, CE.

    Per batch: ``sigma = sigma_max * torch.rand(B)`` then ``n = torch.randn_like(x)`` (in this
    order, on ``x``'s device); the classifier sees :meth:`denoise` of them.

    Args:
        nim: the autoencoder; put in eval mode with gradients off (it stays frozen).
        sigma_max: top of the uniform noise range, 0-255 scale.
        label_smoothing: of the cross-entropy.
    """

    def __init__(self, nim: NIMAutoencoder, sigma_max: float = 30.0,
                 label_smoothing: float = 0.0) -> None:
        self.sigma_max = check_sigma_max(sigma_max)
        self.label_smoothing = float(label_smoothing)
        self.nim = nim.eval().requires_grad_(False)
        # sigma_test = 255 makes De3Defense add exactly its fixed draw (255 / 255 = 1), so a draw
        # pre-scaled per image by sigma_i / 255 reuses purify() unchanged at per-image levels.
        self._de3 = De3Defense(self.nim, nn.Identity(), sigma_test=255.0)

    @torch.no_grad()
    def denoise(self, x: Tensor, sigma: Tensor, noise: Tensor) -> Tensor:
        """De^3's classifier input: ``purify`` at levels ``sigma`` (B,) with the draw ``noise``."""
        scaled = sigma.to(x).view(-1, 1, 1, 1) / 255.0 * noise  # (B, C, H, W), 0-1 scale
        self._de3.set_noise(scaled)
        try:
            return self._de3.purify(x)  # (B, C, H, W) in [0, 1]
        finally:
            self._de3.set_noise(None)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        sigma = self.sigma_max * torch.rand(x.shape[0], dtype=x.dtype, device=x.device)  # (B,)
        noise = torch.randn_like(x)  # (B, C, H, W)
        logits = model(self.denoise(x, sigma, noise))  # (B, K)
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing), logits


def check_sigma_max(sigma_max: object) -> float:
    """``sigma_max`` on the 0-255 scale: a finite number >= 0."""
    if isinstance(sigma_max, bool) or not isinstance(sigma_max, (int, float)) \
            or not (math.isfinite(sigma_max) and sigma_max >= 0):
        raise ValueError(f"sigma_max must be a finite number >= 0 (0-255 scale), got {sigma_max!r}")
    return float(sigma_max)


def _load(nim_path_or_model: str | os.PathLike | NIMAutoencoder,
          ) -> tuple[NIMAutoencoder, Path | None]:
    """The autoencoder, and the checkpoint path it came from (None for a model given)."""
    if isinstance(nim_path_or_model, NIMAutoencoder):
        return nim_path_or_model, None
    path = Path(nim_path_or_model).expanduser()
    return load_nim(path), path


def _architecture(c: NIMConfig, train_cfg: TrainConfig, pool: str) -> dict[str, Any]:
    """The ``nim-vit`` kwargs of the encoder, checked against the dataset and ``train_cfg``."""
    data = load_dataset(train_cfg.dataset, "test", data_root=train_cfg.data_root)
    shape = tuple(data.image_shape)
    if shape != (c.in_channels, *c.image_size):
        raise ValueError(f"NIM checkpoint is for {c.in_channels}x{c.image_size[0]}x"
                         f"{c.image_size[1]} images, {train_cfg.dataset} has "
                         f"{'x'.join(map(str, shape))}")
    kwargs = encoder_kwargs(c, pool)
    if train_cfg.model_kwargs and train_cfg.model_kwargs != kwargs:
        raise ValueError("train_cfg.model_kwargs must be empty: nim finetune takes the "
                         "architecture from the NIM checkpoint")
    return kwargs


def _score_de3(nim: NIMAutoencoder, model: ImageClassifier, cfg: TrainConfig,
               sigma_test: float, dev: torch.device) -> dict[str, Any]:
    """Test accuracy of the fine-tuned model inside De^3 (noise seed ``cfg.seed``)."""
    test_ds = load_dataset(cfg.dataset, "test", data_root=cfg.data_root)
    if cfg.test_limit is not None:
        test_ds = test_ds.balanced(cfg.test_limit)
    de3 = De3Defense(nim, model.to(dev).eval(), sigma_test=sigma_test, noise_seed=cfg.seed)
    with torch.no_grad():
        accuracy = evaluate_accuracy(de3, test_ds.batches(512), dev)
    return {"de3_accuracy": accuracy, "de3_sigma_test": sigma_test}


def finetune(
    nim_path_or_model: str | os.PathLike | NIMAutoencoder,
    train_cfg: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    sigma_max: float = 30.0,
    sigma_test: float | None = 70.0,
    pool: str = "mean",
    device: str | torch.device = "auto",
    resume: bool = True,
    progress: bool = True,
) -> tuple[ImageClassifier, dict[str, Any]]:
    """Fine-tune a ``nim-vit`` classifier from a NIM/MIM encoder on De^3 reconstructions.

    Args:
        nim_path_or_model: a checkpoint written by ``nim pretrain`` (``RUN/nim``) or a model.
        train_cfg: the schedule and data; ``model`` / ``model_kwargs`` are replaced by
            ``nim-vit`` with the encoder's architecture (other kwargs there are an error).
        out_dir: the trainer's run folder (``model.safetensors`` + ``model.json`` at the end).
        sigma_max: training noise ``sigma ~ U(0, sigma_max)`` per image, 0-255 scale.
        sigma_test: if set, the final model is also scored inside ``De3Defense`` at this level
            (noise seed = ``train_cfg.seed``) on the test split: ``metrics["de3_accuracy"]``.
        pool: ``"mean"`` (MAE / official NIM fine-tuning) or ``"cls"`` token pooling.
        device, resume, progress: as for :func:`advimage.train.train`.

    Returns:
        ``(model, metrics)``; ``test_accuracy`` is the classifier on clean test images.
    """
    sigma_max = check_sigma_max(sigma_max)
    if sigma_test is not None:
        sigma_test = check_sigma_test(sigma_test)
    if train_cfg.adv_eps > 0:
        raise ValueError("nim finetune trains on De^3 reconstructions; adv_eps must be 0")
    nim, path = _load(nim_path_or_model)
    kwargs = _architecture(nim.config, train_cfg, pool)
    cfg = dataclasses.replace(train_cfg, model="nim-vit", model_kwargs=kwargs)
    dev = resolve_device(device)
    nim.to(dev)
    hook = NIMFinetuneLoss(nim, sigma_max, cfg.label_smoothing)
    run_info = {"nim_fingerprint": nim_fingerprint(nim),
                "nim_path": str(path) if path is not None else None,
                "nim_mode": nim.config.mode, "nim_sigma_max": sigma_max, "nim_pool": pool}

    def model_init(model: ImageClassifier) -> None:
        copied = copy_encoder(nim, model)
        log.info("copied %d encoder tensors from the NIM model; head is new", len(copied))

    model, metrics = train(cfg, out_dir, device=dev, resume=resume, progress=progress,
                           loss_hook=hook, run_info=run_info, model_init=model_init)
    if sigma_test is not None and is_rank_zero():  # under torchrun rank 0 scores and writes
        metrics.update(_score_de3(nim, model, cfg, sigma_test, dev))
        model.cpu()
        write_json(Path(out_dir) / "metrics.json", metrics)
    return model, metrics
