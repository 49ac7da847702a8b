"""``advimage demo`` and ``advimage attack``: craft adversarial images with one attack."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advimage.cli.common import (
    CliError,
    add_common_args,
    add_model_data_args,
    attack_kwargs,
    check_out_arg,
    eps_list,
    load_data,
    load_model_on_device,
)

if TYPE_CHECKING:  # the CLI imports torch lazily, when a command runs
    import torch
    from torch import nn

__all__ = [
    "add_attack_parser",
    "add_demo_parser",
    "add_speed_args",
    "check_speed_args",
    "cmd_attack",
    "cmd_demo",
    "speed_model",
]


def add_speed_args(p: argparse.ArgumentParser) -> None:
    """``--precision`` and ``--channels-last`` (``attack``, ``eval robust``, ``models eval``)."""
    p.add_argument("--precision", default="fp32", metavar="fp32|bf16|fp16",
                   help="autocast the model's forward/backward: bf16 (CPU, CUDA) or fp16 (CUDA); "
                        "images, attack steps and the projection stay fp32 (default: fp32)")
    p.add_argument("--channels-last", action="store_true", default=None,
                   help="run the model in channels-last layout (default: on CUDA with "
                        "bf16/fp16; attacks on the CPU already use it for their inputs)")


def check_speed_args(a: argparse.Namespace) -> None:
    """Refuse a bad ``--precision`` for ``--device`` in one line, before any loading."""
    from advimage.precision import check_precision
    from advimage.utils import resolve_device

    check_precision(a.precision, resolve_device(a.device))


def speed_model(a: argparse.Namespace, model: nn.Module, dev: torch.device) -> nn.Module:
    """``model`` wrapped for ``--precision`` / ``--channels-last`` (itself for the defaults)."""
    from advimage.precision import with_precision

    return with_precision(model, a.precision, dev, a.channels_last)


def cmd_demo(a: argparse.Namespace) -> int:
    """PGD and FGSM on the bundled digits model; print the table, write the HTML report."""
    from advimage.demo import run_demo

    check_out_arg(a, "dir")
    s = run_demo(
        a.out, eps=a.eps, steps=a.steps, device=a.device, seed=a.seed, progress=not a.no_progress
    )
    print(f"digits test set, {s['n']} images, L-inf eps = {a.eps:g}")
    print(f"{'attack':<12}{'clean acc':>10}{'robust acc':>12}")
    for r in s["results"]:
        print(f"{r['attack']:<12}{r['clean_accuracy']:>10.4f}{r['robust_accuracy']:>12.4f}")
    print(f"report: {Path(a.out) / 'report.html'}  ({s['seconds']:.1f} s)")
    return 0


def cmd_attack(a: argparse.Namespace) -> int:
    """Attack ``--limit`` images at one budget and save them losslessly (tensors + PNGs)."""
    from advimage.attacks import create_attack
    from advimage.eval.export import save_adversarials
    from advimage.oom import oom_guard

    check_out_arg(a, "dir")
    eps = eps_list(a.eps)
    if len(eps) != 1:
        raise CliError("advimage attack takes one --eps; use `advimage eval robust` for a grid")
    attack = create_attack(a.attack, **attack_kwargs(a, a.attack, eps[0]))
    check_speed_args(a)
    model, _, dev = load_model_on_device(a)
    ds = load_data(a, a.split, model=model)
    attack.check_budget(ds.subset([0]).tensors()[0])  # an L2 eps: refused before --out
    with oom_guard(a.batch_size):
        summary = save_adversarials(
            speed_model(a, model, dev), ds, attack, a.out, batch_size=a.batch_size,
            device=dev, progress=not a.no_progress, config=_source(a),
        )
    print(
        f"{a.attack} eps={eps[0]:.5g}: clean accuracy {summary['clean_accuracy']:.4f}, "
        f"robust accuracy {summary['robust_accuracy']:.4f} on {summary['n']} images -> {a.out}"
    )
    return 0


def _source(a: argparse.Namespace) -> dict[str, Any]:
    """Where model and data came from; the run folder's configuration adds the attack's
    resolved options, the weights' fingerprint and the data actually loaded."""

    def where(path: str | None) -> str | None:
        return str(Path(path).resolve()) if path and Path(path).exists() else path

    speed = {k: v for k, v in (("precision", a.precision.lower()),
                               ("channels_last", a.channels_last))
             if v not in ("fp32", None)}  # only when set: default folders keep their config
    return {"model": where(str(a.model)), "data": a.data, "data_root": where(a.data_root),
            "split": a.split, "image_size": a.image_size, "limit": a.limit, "seed": a.seed,
            **speed}


def add_demo_parser(sub: Any) -> None:
    """Add ``demo`` to the ``advimage`` sub-command parsers."""
    d = sub.add_parser("demo",
        description=("Attack the bundled digits model with FGSM and PGD, score the images with the "
                     "detector and the cache defense, and write one self-contained HTML report; "
                     "needs no downloads."),
        epilog=("examples:\n"
                "  advimage demo --out demo\n"
                "  advimage demo --eps 0.2 --steps 40"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="attack the bundled digits model and write an HTML report")
    d.add_argument("--out", default="advimage-demo", help="output folder (default: advimage-demo)")
    d.add_argument("--eps", type=lambda s: eps_list(s)[0], default=0.1, help="L-inf budget")
    d.add_argument("--steps", type=int, default=20, help="PGD steps")
    add_common_args(d)
    d.set_defaults(func=cmd_demo)


def add_attack_parser(sub: Any) -> None:
    """Add ``attack`` to the ``advimage`` sub-command parsers."""
    at = sub.add_parser("attack",
        description=("Craft adversarial images of a model's test images with one attack and save "
                     "them losslessly with their predictions."),
        epilog=("examples:\n"
                "  advimage attack --model bundled --data digits --attack pgd --eps 0.1 --out adv"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="craft adversarial images and save them losslessly")
    add_model_data_args(at)
    at.add_argument("--attack", default="pgd", help="attack name (advimage.attacks.list_attacks)")
    at.add_argument("--norm", default="linf",
                    help="linf|l2|l1|l0, as the attack supports (apgd-ce: linf|l2|l1; fmn: all)")
    at.add_argument("--eps", default="8/255", help="budget, e.g. 8/255")
    at.add_argument("--steps", type=int, default=None)
    at.add_argument("--restarts", type=int, default=None)
    at.add_argument("--out", required=True)
    add_speed_args(at)
    add_common_args(at)
    at.set_defaults(func=cmd_attack)
