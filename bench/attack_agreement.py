"""Full-size agreement of advimage's attacks with torchattacks, Foolbox and ART (a script).

Same models, same input tensors, same eps and steps as the differential tests
(``tests/attacks/test_differential.py``), at full size: 1,000 class-balanced CIFAR-10 test
images (100 per class) on the reference ResNet-20 at eps = 8/255, and the first 1,000 MNIST test
images on advertorch's adversarially trained LeNet5 at eps = 0.3. Prints a markdown table of
robust accuracy per library, the gap to ours (percentage points; negative = ours stronger), the
per-point agreement of the attack's outcome with ours, and the wall time.

    python bench/attack_agreement.py            # full size (an hour on 2 busy cores)
    python bench/attack_agreement.py --n 500    # what bench/README.md reports
    python bench/attack_agreement.py --quick    # 100 points, small budgets (a smoke run)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from common import (
    add_common_args,
    freeze,
    header,
    load_cifar,
    load_mnist,
    peers,
    setup_threads,
    timed,
)
from torch import Tensor, nn

from advimage.attacks import create_attack

Row = tuple[str, str, str, float, float | None, float | None, float]


def compare(
    rows: list[Row], model: nn.Module, x: Tensor, y: Tensor, dataset: str, attack: str,
    contenders: dict[str, Callable[[], Tensor]],
    robust_fn: Callable[[Tensor], Tensor] | None = None,
) -> None:
    """Run every contender (the first is ours) and append one row per library."""
    robust_fn = robust_fn or (lambda adv: peers.robust_mask(model, adv, y))
    ours_mask = None
    for lib, fn in contenders.items():
        torch.manual_seed(0)
        seconds, adv = timed(fn)
        mask = robust_fn(adv)  # (B,) still robust
        acc = 100.0 * mask.float().mean().item()
        if ours_mask is None:
            ours_mask, ours_acc = mask, acc
            rows.append((dataset, attack, lib, acc, None, None, seconds))
        else:
            agree = 100.0 * (mask == ours_mask).float().mean().item()
            rows.append((dataset, attack, lib, acc, ours_acc - acc, agree, seconds))
        print("  " + table(rows[-1:]).splitlines()[-1], flush=True)


def cw_robust(model: nn.Module, x: Tensor, y: Tensor, budget: float) -> Callable[[Tensor], Tensor]:
    """Robust at an L2 budget: a minimal-perturbation result fools only if within ``budget``."""

    def fn(adv: Tensor) -> Tensor:
        far = (adv - x).flatten(1).norm(dim=1) > budget
        return peers.robust_mask(model, adv, y) | far

    return fn


def run_cifar(args: argparse.Namespace, rows: list[Row]) -> None:
    model, x, y = load_cifar(args.shared, args.n)
    freeze(model)
    eps = 8 / 255
    q = args.quick
    ds = "cifar10"
    compare(rows, model, x, y, ds, "FGSM", {
        "advimage": lambda: create_attack("fgsm", eps=eps)(model, x, y),
        "torchattacks": lambda: peers.ta_fgsm(model, x, y, eps),
        "foolbox": lambda: peers.fb_fgsm(model, x, y, eps),
        "art": lambda: peers.art_fgsm(model, x, y, eps),
    })
    steps, alpha = (3, eps / 3) if q else (10, eps / 4)
    compare(rows, model, x, y, ds, f"PGD-{steps} a=eps/{round(eps / alpha)} no rand. start", {
        "advimage": lambda: create_attack("pgd", eps=eps, steps=steps, step_size=alpha,
                                          random_start=False)(model, x, y),
        "torchattacks": lambda: peers.ta_pgd(model, x, y, eps, alpha, steps),
        "foolbox": lambda: peers.fb_pgd(model, x, y, eps, alpha, steps),
        "art": lambda: peers.art_pgd(model, x, y, eps, alpha, steps),
    })
    bs, st = (2, 5) if q else (4, 10)
    budget = 0.1  # L2, pixel units in [0, 1]
    compare(rows, model, x, y, ds, f"CW-L2 {bs}x{st} c0=0.01, robust @L2 {budget}", {
        "advimage": lambda: create_attack("cw-l2", steps=st, binary_steps=bs, initial_const=0.01,
                                          lr=0.01)(model, x, y),
        "foolbox": lambda: peers.fb_cw(model, x, y, st, bs, 0.01, 0.01),
    }, cw_robust(model, x, y, budget))
    st = 10 if q else 30
    compare(rows, model, x, y, ds, f"CW-L2 c=0.1 {st} steps, robust @L2 0.2", {
        "advimage": lambda: create_attack("cw-l2", steps=st, binary_steps=1, initial_const=0.1,
                                          lr=0.01)(model, x, y),
        "torchattacks": lambda: peers.ta_cw(model, x, y, 0.1, st, 0.01),
    }, cw_robust(model, x, y, 0.2))
    queries = 100 if q else 1000
    compare(rows, model, x, y, ds, f"Square {queries} queries", {
        "advimage": lambda: create_attack("square", eps=eps, queries=queries)(model, x, y),
        "torchattacks": lambda: peers.ta_square(model, x, y, eps, queries),
    })


def run_mnist(args: argparse.Namespace, rows: list[Row]) -> None:
    model, x, y = load_mnist(args.shared, args.n)
    eps = 0.3
    q = args.quick
    ds = "mnist"
    compare(rows, model, x, y, ds, "FGSM", {
        "advimage": lambda: create_attack("fgsm", eps=eps)(model, x, y),
        "torchattacks": lambda: peers.ta_fgsm(model, x, y, eps),
        "foolbox": lambda: peers.fb_fgsm(model, x, y, eps),
        "art": lambda: peers.art_fgsm(model, x, y, eps),
    })
    steps, alpha = (5, 0.075) if q else (40, 0.01)  # 40 x 0.01: advertorch's training attack
    for rs in (False, True):
        name = f"PGD-{steps} a={alpha} " + ("rand. start" if rs else "no rand. start")
        compare(rows, model, x, y, ds, name, {
            "advimage": lambda rs=rs: create_attack("pgd", eps=eps, steps=steps, step_size=alpha,
                                                    random_start=rs)(model, x, y),
            "torchattacks": lambda rs=rs: peers.ta_pgd(model, x, y, eps, alpha, steps, rs),
            "foolbox": lambda rs=rs: peers.fb_pgd(model, x, y, eps, alpha, steps, rs),
            "art": lambda rs=rs: peers.art_pgd(model, x, y, eps, alpha, steps, rs),
        })
    steps = 10 if q else 100
    for loss in ("ce", "dlr"):
        compare(rows, model, x, y, ds, f"APGD-{loss.upper()} {steps} steps", {
            "advimage": lambda loss=loss: create_attack(f"apgd-{loss}", eps=eps, steps=steps)(
                model, x, y),
            "torchattacks": lambda loss=loss: peers.ta_apgd(model, x, y, eps, steps, loss=loss),
        })
    queries = 50 if q else 500  # every robust point is queried this often: the costliest row
    compare(rows, model, x, y, ds, f"Square {queries} queries", {
        "advimage": lambda: create_attack("square", eps=eps, queries=queries)(model, x, y),
        "torchattacks": lambda: peers.ta_square(model, x, y, eps, queries),
    })


def table(rows: list[Row]) -> str:
    lines = [
        "| data | attack | library | robust acc. % | ours - theirs (pt) | same outcome % "
        "| time s |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for ds, attack, lib, acc, gap, agree, sec in rows:
        g = "" if gap is None else f"{gap:+.2f}"
        a = "" if agree is None else f"{agree:.1f}"
        lines.append(f"| {ds} | {attack} | {lib} | {acc:.2f} | {g} | {a} | {sec:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--n", type=int, default=None, help="points per dataset (default 1000)")
    parser.add_argument("--dataset", choices=("cifar10", "mnist", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="100 points, small budgets")
    args = parser.parse_args()
    args.n = args.n or (100 if args.quick else 1000)
    setup_threads(args.threads)
    rows: list[Row] = []
    if args.dataset in ("cifar10", "both"):
        run_cifar(args, rows)
    if args.dataset in ("mnist", "both"):
        run_mnist(args, rows)
    print()
    print(header(f"attack agreement, {args.n} points per dataset"))
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
