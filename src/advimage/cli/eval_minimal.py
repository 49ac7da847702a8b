"""``advimage eval minimal``: one minimal-norm run, the whole robust-accuracy-vs-eps curve.

A minimal-norm attack (FMN, Pintor et al., NeurIPS 2021; DDN, Rony et al., CVPR 2019;
DeepFool, Moosavi-Dezfooli et al., CVPR 2016) finds each image's smallest fooling perturbation,
so robust accuracy at every budget follows from one run
(:func:`advimage.eval.minimal.robust_curve`), where ``eval robust`` attacks once per budget.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any

from advimage.cli.common import (
    CliError,
    add_common_args,
    add_model_data_args,
    check_out_arg,
    eps_list,
    load_data,
    load_model_on_device,
)

__all__ = ["add_minimal_parser", "cmd_eval_minimal"]

MINIMAL_ATTACKS = ("fmn", "ddn", "deepfool")


def cmd_eval_minimal(a: argparse.Namespace) -> int:
    """Per-image minimal norms of ``--attack``, robust accuracy at each ``--eps``; with
    ``--out``: ``minimal.csv`` (eps, robust accuracy) and ``minimal.json`` (also the norms)."""
    import time

    import torch

    from advimage.attacks import MinimalNormAttack, create_attack
    from advimage.eval.minimal import minimal_norms, robust_curve

    check_out_arg(a, "dir")
    if a.attack not in MINIMAL_ATTACKS:
        raise CliError(f"--attack must be a minimal-norm attack: {', '.join(MINIMAL_ATTACKS)}")
    options: dict[str, Any] = {"norm": a.norm, "seed": a.seed}
    if a.steps is not None:
        options["steps"] = a.steps
    try:
        attack = create_attack(a.attack, **options)
    except ValueError as err:
        raise CliError(str(err)) from None
    if not isinstance(attack, MinimalNormAttack):  # the registry name was checked above
        raise CliError(f"{a.attack} is not a minimal-norm attack")
    budgets = eps_list(a.eps)
    model, _, dev = load_model_on_device(a)
    x, y = load_data(a, a.split, model=model).tensors()
    t0 = time.perf_counter()
    need = minimal_norms(model, x.to(dev), y.to(dev), attack, batch_size=a.batch_size)
    seconds = time.perf_counter() - t0
    curve = robust_curve(need, budgets)
    finite = need[torch.isfinite(need) & (need > 0)]
    median = float(need.median())
    print(f"{a.attack} {a.norm}: {len(need)} images, median minimal norm {median:.5g} "
          f"({int(torch.isinf(need).sum())} never fooled, {seconds:.1f} s)")
    print(f"{'eps':>10}{'robust':>9}")
    for e, r in zip(budgets, curve, strict=True):
        print(f"{e:>10.5g}{r:>9.4f}")
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "minimal.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["attack", "norm", "eps", "robust_accuracy"])
            w.writerows([a.attack, a.norm, e, r] for e, r in zip(budgets, curve, strict=True))
        doc = {
            "attack": a.attack, "norm": a.norm, "options": options, "n": len(need),
            "seconds": round(seconds, 3), "median": _json_float(median),
            "mean_fooled": _json_float(float(finite.mean())) if finite.numel() else None,
            "curve": [{"eps": e, "robust_accuracy": r} for e, r in zip(budgets, curve,
                                                                       strict=True)],
            "norms": [_json_float(float(v)) for v in need.cpu()],
        }
        (out / "minimal.json").write_text(json.dumps(doc, indent=1))
        print(f"written {out / 'minimal.csv'} and {out / 'minimal.json'}")
    return 0


def _json_float(v: float) -> float | None:
    """``inf`` (never fooled) as ``None``: JSON has no infinity."""
    return v if math.isfinite(v) else None


def add_minimal_parser(esub: Any) -> None:
    """Add ``eval minimal`` to the ``advimage eval`` sub-command parsers."""
    em = esub.add_parser(
        "minimal",
        description=("Each image's smallest adversarial perturbation (FMN, DDN or DeepFool), "
                     "turned into the whole robust-accuracy-vs-eps curve from one run."),
        epilog=("examples:\n"
                "  advimage eval minimal --model bundled --data digits --attack fmn --norm l2 "
                "--eps 0.5,1,2\n"
                "  advimage eval minimal --model bundled --data digits --attack deepfool "
                "--norm linf --eps 0.05,0.1 --out runs/minimal"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="robust accuracy vs eps from one minimal-norm run")
    add_model_data_args(em)
    em.add_argument("--attack", default="fmn", help="fmn|ddn|deepfool (default: fmn)")
    em.add_argument("--norm", default="l2", help="linf|l2|l1|l0 (fmn); l2 (ddn); l2|linf")
    em.add_argument("--eps", default="0.25,0.5,1,2",
                    help="budgets of the curve, in the norm's units (l0: pixels)")
    em.add_argument("--steps", type=int, default=None, help="attack iterations")
    em.add_argument("--out", default=None, help="folder for minimal.csv and minimal.json")
    add_common_args(em)
    em.set_defaults(func=cmd_eval_minimal)
