"""``advimage nim pretrain``: pre-train a noisy image modeling autoencoder (You et al.,
NeurIPS 2023, "Beyond Pretrained Features: Noisy Image Modeling Provides Adversarial Defense")
or its masked-image-modeling baseline on a registered dataset's training split.

The run folder holds per-epoch ``state.*`` (resumed when present) and the final ``nim.*``
checkpoint that the ``nim`` harness defense loads (``options: {path: RUN/nim}``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_nim_parser", "cmd_nim_pretrain"]


def cmd_nim_pretrain(a: argparse.Namespace) -> int:
    """Load the data, pre-train, print the last epoch's loss and the checkpoint path."""
    from advimage.data import load_dataset
    from advimage.defend.nim_model import NIMConfig
    from advimage.defend.nim_train import pretrain

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
    _, hist = pretrain(cfg, images, a.out, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                       seed=a.seed, resume=not a.no_resume, device=a.device)
    last = hist[-1]
    sys.stdout.write(f"{a.mode} epoch {last['epoch']}: loss {last['loss']:.4f} "
                     f"({last['imgs_per_s']:.0f} images/s) -> {a.out}/nim.safetensors\n")
    return 0


def add_nim_parser(sub: Any) -> None:
    """Add ``nim pretrain`` to the ``advimage`` sub-command parsers."""
    n = sub.add_parser("nim", help="noisy image modeling (You et al. 2023): pre-train")
    nsub = n.add_subparsers(dest="nim_command", required=True, metavar="ACTION")
    p = nsub.add_parser("pretrain", help="pre-train a NIM (or MIM) autoencoder, resumable")
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
    p.add_argument("--device", default="auto", help="auto|cpu|cuda (default: auto)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    p.set_defaults(func=cmd_nim_pretrain)
