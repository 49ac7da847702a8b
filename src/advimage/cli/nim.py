"""``advimage nim pretrain``: pre-train a noisy image modeling autoencoder (You et al.,
NeurIPS 2023, "Beyond Pretrained Features: Noisy Image Modeling Provides Adversarial Defense")
or its masked-image-modeling baseline on a registered dataset's training split.

The run folder holds per-epoch ``state.*`` (resumed when present) and the final ``nim.*``
checkpoint that the ``nim`` harness defense loads (``options: {path: RUN/nim}``).
``advimage nim finetune`` trains a ``nim-vit`` classifier from that checkpoint's encoder on
De^3 reconstructions (:mod:`advimage.studies.nim.finetune`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from advimage.cli.common import add_common_args, add_train_args, check_out_arg, train_config
from advimage.cli.track_options import add_track_arg, tracking_for

__all__ = ["add_nim_parser", "cmd_nim_finetune", "cmd_nim_pretrain"]

# `nim finetune`'s schedule: SGD + momentum 0.9 (TrainConfig's), cosine with warm-up
_FINETUNE_DEFAULTS: dict[str, Any] = {
    "data": "digits",
    "epochs": 30,
    "batch_size": 128,  # images per step
    "lr": 0.02,  # peak learning rate
    "weight_decay": 5e-4,  # L2 on weights
    "warmup_epochs": 1.0,  # linear warm-up, epochs
    "label_smoothing": 0.0,
    "augment": "standard",
}
_FINETUNE_HELP = {
    "data": "dataset name (default: digits)",
    "train_limit": "N training images, balanced",
    "test_limit": "N test images, balanced",
    "lr": "peak SGD learning rate (default 0.02: best of 0.005-0.1 on CIFAR-10)",
    "out": "run folder (resumed if it holds a state)",
    "no_resume": "start over",
}


def cmd_nim_pretrain(a: argparse.Namespace) -> int:
    """Load the data, pre-train, print the last epoch's loss and the checkpoint path."""
    from advimage.data import load_dataset
    from advimage.defend.nim.model import NIMConfig
    from advimage.studies.nim.train import pretrain
    from advimage.train.distributed import check_batch, is_rank_zero

    check_out_arg(a, "dir")
    ds = load_dataset(a.data, "train", data_root=a.data_root)
    if a.limit is not None:
        if a.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {a.limit}")
        ds = ds.balanced(a.limit)  # class-balanced, as every other --limit
    images = ds.tensors()[0]  # (N, C, H, W)
    c, h, w = images.shape[1:]
    cfg = NIMConfig(image_size=(h, w), in_channels=c, patch_size=a.patch_size,
                    enc_dim=a.enc_dim, enc_depth=a.enc_depth, enc_heads=a.enc_heads,
                    dec_dim=a.dec_dim, dec_depth=a.dec_depth, dec_heads=a.dec_heads, mode=a.mode)
    check_batch(min(a.batch_size, len(images)))  # pretrain's global batch, before --track
    with tracking_for(a, a.out, {**cfg.to_dict(), "epochs": a.epochs, "lr": a.lr}):
        _, hist = pretrain(cfg, images, a.out, epochs=a.epochs, batch_size=a.batch_size,
                           lr=a.lr, seed=a.seed, resume=not a.no_resume, device=a.device)
    last = hist[-1]
    if is_rank_zero():  # under torchrun: one line, from rank 0
        sys.stdout.write(f"{a.mode} epoch {last['epoch']}: loss {last['loss']:.4f} "
                         f"({last['imgs_per_s']:.0f} images/s) -> {a.out}/nim.safetensors\n")
    return 0


def cmd_nim_finetune(a: argparse.Namespace) -> int:
    """Fine-tune on De^3 reconstructions; print test accuracies and the checkpoint path."""
    from advimage.studies.nim.finetune import finetune
    from advimage.train.distributed import check_batch, is_rank_zero

    check_out_arg(a, "dir")
    cfg = train_config(a, model="nim-vit")  # the same recipe plumbing as `advimage train`
    check_batch(cfg.batch_size)  # under torchrun: before --track writes anything
    sigma_test = None if a.sigma_test < 0 else a.sigma_test
    with tracking_for(a, a.out, cfg.to_dict()):
        _, m = finetune(a.nim, cfg, a.out, sigma_max=a.sigma_max, sigma_test=sigma_test,
                        pool=a.pool, device=a.device, resume=not a.no_resume,
                        progress=not a.no_progress)
    de3 = (f"; De3 (sigma_test {m['de3_sigma_test']:g}) accuracy {m['de3_accuracy']:.4f}"
           if "de3_accuracy" in m else "")
    if is_rank_zero():  # under torchrun: one line, from rank 0
        sys.stdout.write(f"test accuracy {m['test_accuracy']:.4f} on {m['test_images']} "
                         f"images{de3}; checkpoint {a.out}/model.safetensors\n")
    return 0


def add_nim_parser(sub: Any) -> None:
    """Add ``nim pretrain`` / ``nim finetune`` to the ``advimage`` sub-command parsers."""
    n = sub.add_parser("nim",
        description=("Noisy image modeling of You et al. (NeurIPS 2023): pre-train a denoising "
                     "autoencoder, then fine-tune a classifier from its encoder for the De^3 "
                     "defense."),
        epilog=("examples:\n"
                "  advimage nim pretrain --data digits --out runs/nim\n"
                "  advimage nim finetune --nim runs/nim/nim --data digits --out runs/nim-cls"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="noisy image modeling (You et al. 2023): pre-train, fine-tune")
    nsub = n.add_subparsers(dest="nim_command", required=True, metavar="ACTION")
    p = nsub.add_parser("pretrain",
        description=("Pre-train a NIM (noisy image) or MIM (masked image) autoencoder; resumable."),
        epilog=("examples:\n"
                "  advimage nim pretrain --data digits --out runs/nim\n"
                "  advimage nim pretrain --mode mim --data digits --out runs/mim"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="pre-train a NIM (or MIM) autoencoder, resumable")
    p.add_argument("--data", default="digits", help="dataset name (default: digits)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--limit", type=int, default=None, help="use N training images, class-balanced")
    p.add_argument("--mode", default="nim", choices=["nim", "mim"])
    p.add_argument("--patch-size", type=int, default=4, help="pixels per patch side")
    p.add_argument("--enc-dim", type=int, default=192)
    p.add_argument("--enc-depth", type=int, default=6)
    p.add_argument("--enc-heads", type=int, default=3)
    p.add_argument("--dec-dim", type=int, default=128)
    p.add_argument("--dec-depth", type=int, default=2)
    p.add_argument("--dec-heads", type=int, default=4)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    p.add_argument("--out", required=True, help="run folder (resumed if it holds a state)")
    p.add_argument("--no-resume", action="store_true", help="start over")
    add_track_arg(p)
    add_common_args(p)  # --device, --seed, --no-progress, --threads, -v as every command
    p.set_defaults(func=cmd_nim_pretrain)
    f = nsub.add_parser("finetune",
        description=("Fine-tune a classifier from a NIM encoder on De^3 reconstructions of noised "
                     "images; resumable."),
        epilog=("examples:\n"
                "  advimage nim finetune --nim runs/nim/nim --data digits --out runs/nim-cls"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="fine-tune a classifier from a NIM encoder on De^3 "
                                         "reconstructions, resumable")
    f.add_argument("--nim", required=True, help="NIM/MIM checkpoint from nim pretrain (RUN/nim)")
    add_train_args(f, presets=False, skip=("momentum",), defaults=_FINETUNE_DEFAULTS,
                   helps=_FINETUNE_HELP)  # --model is nim-vit, fixed by cmd_nim_finetune
    f.add_argument("--sigma-max", type=float, default=30.0,
                   help="training noise sigma ~ U(0, SIGMA_MAX), 0-255 scale (default 30)")
    f.add_argument("--sigma-test", type=float, default=70.0,
                   help="also score De^3 at this level after training (< 0: skip; default 70)")
    f.add_argument("--pool", default="mean", choices=["mean", "cls"],
                   help="head on the mean patch token (MAE, default) or the class token")
    add_common_args(f)  # --device, --seed, --no-progress, --threads, -v as every command
    f.set_defaults(func=cmd_nim_finetune)
