"""``advimage train`` and ``advimage distill``: train a classifier, or a student of a teacher
(Hinton et al. 2015 knowledge distillation, Romero et al. 2015 FitNets, or independently)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from advimage.cli.common import (
    CliError,
    add_common_args,
    add_train_args,
    check_out_arg,
    eps_list,
    train_config,
)
from advimage.cli.track_options import tracking_for

__all__ = ["add_distill_parser", "add_train_parser", "cmd_distill", "cmd_train"]


def cmd_train(a: argparse.Namespace) -> int:
    """Train (resuming from ``--out``); print the test accuracy and the checkpoint path."""
    from advimage.train import train
    from advimage.train.distributed import check_batch, is_rank_zero

    check_out_arg(a, "dir")
    cfg = train_config(a)
    check_batch(cfg.batch_size)  # under torchrun: before --track writes anything
    with tracking_for(a, a.out, cfg.to_dict()):
        _, metrics = train(
            cfg, a.out, device=a.device, resume=not a.no_resume, progress=not a.no_progress
        )
    if is_rank_zero():  # under torchrun: one line, from rank 0
        print(
            f"test accuracy {metrics['test_accuracy']:.4f} on {metrics['test_images']} images; "
            f"checkpoint {Path(a.out) / 'model.safetensors'}"
        )
    return 0


def cmd_distill(a: argparse.Namespace) -> int:
    """Train one student arm; print its test accuracy and the checkpoint path."""
    from advimage.models.hub import load_model
    from advimage.studies.distill import DistillConfig, distill
    from advimage.train.distributed import check_batch, is_rank_zero

    check_out_arg(a, "dir")
    cfg = train_config(a)
    check_batch(cfg.batch_size)  # under torchrun: before --track writes anything
    teacher, teacher_meta = (None, None) if a.arm == "independent" else load_model(a.teacher)
    layers = a.hint_layers.split(",") if a.hint_layers else [None, None]
    if len(layers) != 2:
        raise CliError("--hint-layers takes TEACHER_LAYER,STUDENT_LAYER, e.g. conv2,conv2")
    dcfg = DistillConfig(
        arm=a.arm, tau=a.tau, alpha=a.alpha, beta=a.beta, gamma=a.gamma,
        teacher_layer=layers[0], student_layer=layers[1],
    )
    with tracking_for(a, a.out, {**cfg.to_dict(), "arm": a.arm}):
        _, metrics = distill(
            cfg, dcfg, a.out, teacher=teacher, teacher_meta=teacher_meta, device=a.device,
            resume=not a.no_resume, progress=not a.no_progress,
        )
    if is_rank_zero():  # under torchrun: one line, from rank 0
        print(
            f"{a.arm} student: test accuracy {metrics['test_accuracy']:.4f} on "
            f"{metrics['test_images']} images; checkpoint {Path(a.out) / 'model.safetensors'}"
        )
    return 0


def add_train_parser(sub: Any) -> None:
    """Add ``train`` to the ``advimage`` sub-command parsers."""
    t = sub.add_parser("train",
        description=("Train a classifier, optionally with PGD adversarial training; a checkpoint "
                     "per epoch, resumable."),
        epilog=("examples:\n"
                "  advimage train --model resnet20 --data cifar10 --out runs/r20\n"
                "  advimage train --model resnet20 --data cifar10 --adv-eps 8/255 --out "
                "runs/r20-at"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="train a model (checkpoint per epoch, resumable)")
    add_train_args(t)
    t.add_argument("--adv-eps", type=lambda s: eps_list(s)[0], default=None,
                   help="PGD adversarial training budget, L-inf, e.g. 8/255 (default: off)")
    t.add_argument("--adv-steps", type=int, default=None, help="PGD steps per batch (default 7)")
    add_common_args(t)
    t.set_defaults(func=cmd_train)


def add_distill_parser(sub: Any) -> None:
    """Add ``distill`` to the ``advimage`` sub-command parsers."""
    di = sub.add_parser("distill",
        description=("Train a student from a teacher: Hinton knowledge distillation, FitNets, or "
                     "independently (the control)."),
        epilog=("examples:\n"
                "  advimage distill --teacher bundled --arm kd --out runs/kd"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="train a student: Hinton KD, FitNets or independent")
    di.add_argument("--arm", default="kd", choices=["kd", "fitnets", "independent"])
    di.add_argument("--teacher", default="bundled",
                    help="teacher: any --model spec (default: bundled)")
    di.add_argument("--tau", type=float, default=4.0, help="KD temperature")
    di.add_argument("--alpha", type=float, default=None, help="KD weight (default 0.9)")
    di.add_argument("--beta", type=float, default=None, help="hint weight (default 100)")
    di.add_argument("--gamma", type=float, default=None, help="CE weight (kd 0.1, else 1)")
    di.add_argument("--hint-layers", default=None, help="TEACHER_LAYER,STUDENT_LAYER (fitnets)")
    add_train_args(di)
    add_common_args(di)
    di.set_defaults(func=cmd_distill)
