"""advimage's AutoAttack vs the original (``pyautoattack``) and torchattacks' (a script).

Croce & Hein (ICML 2020), version ``standard`` everywhere (APGD-CE, APGD-T, FAB-T, Square).
Two cases: the adversarially trained MNIST LeNet5 (advertorch) at eps = 0.3 on the first N
test images, and the reference CIFAR-10 ResNet-20 at eps = 2/255 on N class-balanced test
images. All contenders run in the same process on the same tensors, one after another
(original first, then advimage, then torchattacks). Targets (issue 18): robust accuracy at
most 0.1 point above the original's, wall time at most 0.5x the original's.

The original and advimage both attack in chunks of 250 points, each member reseeded per chunk;
torchattacks' standard version runs 10-step APGD/APGD-T/FAB members (its classes' defaults), a
fifth of the paper's gradient work, and is optional (``--torchattacks``) because it is slow.

    python bench/autoattack_speed.py --case mnist --n 200 --threads 2 [--torchattacks]
    python bench/autoattack_speed.py --case cifar --n 200 --threads 2
    python bench/autoattack_speed.py --case mnist --norm l1 --n 200 --threads 2

``--norm l1`` runs L1 AutoAttack (Croce & Hein, ICML 2021: APGD-CE and APGD-T with the
large-radius schedule, FAB-T, Square, all L1) at eps 10 on MNIST (the MNIST L1 radius of
Tramer & Boneh, NeurIPS 2019; the L1 AutoAttack paper itself reports CIFAR-10 and ImageNet,
not MNIST) and eps 12 on CIFAR-10 (the L1 AutoAttack paper's). ``--norm l2``: eps 2 (MNIST,
Tramer & Boneh) and 0.5 (CIFAR-10, the AutoAttack paper's). ``--eps`` overrides.
torchattacks has no L1 AutoAttack; ``--torchattacks`` runs with ``--norm linf`` only.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from common import add_common_args, header, load_cifar, load_mnist, peers, robust_pct, timed
from torch import Tensor

from advimage.attacks import AutoAttack

CASES = {"mnist": (load_mnist, "LeNet5 (adv. trained), MNIST"),
         "cifar": (load_cifar, "ResNet-20, CIFAR-10")}
# default eps per (case, norm) and how the title prints it; see the module doc for the sources
EPS = {("mnist", "linf"): (0.3, "0.3"), ("mnist", "l2"): (2.0, "2"),
       ("mnist", "l1"): (10.0, "10"), ("cifar", "linf"): (2 / 255, "2/255"),
       ("cifar", "l2"): (0.5, "0.5"), ("cifar", "l1"): (12.0, "12")}
MAX_GAP = 0.1  # points: our robust accuracy may exceed the original's by at most this
MAX_TIME_RATIO = 0.5  # our wall time / the original's


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--case", choices=sorted(CASES), default="mnist")
    parser.add_argument("--n", type=int, default=200, help="points")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--norm", choices=("linf", "l2", "l1"), default="linf")
    parser.add_argument("--eps", type=float, default=None, help="default: see the module doc")
    parser.add_argument("--torchattacks", action="store_true", help="also torchattacks' AA")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load, name = CASES[args.case]
    eps, eps_text = EPS[(args.case, args.norm)]
    if args.eps is not None:
        eps, eps_text = args.eps, f"{args.eps:g}"
    title = f"{name}, {args.norm} eps {eps_text}"
    if args.torchattacks and args.norm != "linf":
        parser.error("--torchattacks runs its L-inf AutoAttack only")
    model, x, y = load(args.shared, args.n)
    ours_attack = AutoAttack(eps=eps, norm=args.norm, version="standard", seed=args.seed)
    reports = []

    def ours() -> Tensor:
        result = ours_attack.run(model, x, y)
        reports.append(result.report)
        return result.x_adv

    contenders: list[tuple[str, Callable[[], Tensor]]] = [
        ("original (pyautoattack)",
         lambda: peers.aa_autoattack(model, x, y, eps, args.seed, norm=args.norm)),
        ("advimage", ours),
    ]
    if args.torchattacks:
        contenders.append(("torchattacks (10-step members)",
                           lambda: peers.ta_autoattack(model, x, y, eps, seed=args.seed)))
    results = {}
    for name, fn in contenders:
        seconds, adv = timed(fn)
        results[name] = (robust_pct(model, adv, y), seconds)
        print(f"{name}: {results[name][0]:.2f}% robust, {seconds:.1f}s", flush=True)

    print()
    print(header(f"AutoAttack standard: {title}, {args.n} points, "
                 f"{torch.get_num_threads()} threads"))
    print(f"\nclean accuracy: {robust_pct(model, x, y):.2f}%\n")
    print("| library | robust acc. % | wall s | time / original |")
    print("|---|---:|---:|---:|")
    r_orig, t_orig = results["original (pyautoattack)"]
    for name, (r, t) in results.items():
        print(f"| {name} | {r:.2f} | {t:.1f} | {t / t_orig:.3f} |")
    print("\nadvimage stages:")
    for s in reports[0].stages:
        print(f"  {s.name:10s} attacked {s.n_attacked:5d}  fooled {s.n_fooled:4d}  "
              f"robust after {100 * s.robust_accuracy:6.2f}%  {s.seconds:7.1f}s")
    r_ours, t_ours = results["advimage"]
    gap, ratio = r_ours - r_orig, t_ours / t_orig
    print(f"robust accuracy advimage - original = {gap:+.2f} pt (target <= +{MAX_GAP}): "
          f"{'met' if gap <= MAX_GAP + 1e-9 else 'MISSED'}")
    print(f"time advimage / original = {ratio:.3f} (target <= {MAX_TIME_RATIO}): "
          f"{'met' if ratio <= MAX_TIME_RATIO else 'MISSED'}")


if __name__ == "__main__":
    main()
