"""Speed of advimage's transfer options (MI, TI, DI) and HopSkipJump against their peers.

Reference ResNet-20 on class-balanced CIFAR-10 test images, CPU, all contenders of a table in
the same run, interleaved round-robin after one warm-up (median wall time):

1. MI-FGSM and MI-TI-FGSM (L-inf 8/255, 10 steps of 0.8/255, no random start) against
   torchattacks' ``MIFGSM`` and ``TIFGSM`` (DI off): the same arithmetic, so the robust
   accuracies must agree; MI-DI-TI against ``TIFGSM`` with DI on (same work, other draws).
2. HopSkipJump (L2) against Foolbox's (batched) and ART's (one image at a time) at equal
   queries: each peer runs ``--hsj-steps`` iterations, its model evaluations are counted, and
   advimage gets that many queries per image; median L2 norm of the perturbations found.

    python bench/transfer_hsj_speed.py [--n 64] [--hsj-n 10] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from attack_speed import interleaved
from common import add_common_args, header, load_cifar, peers, robust_pct, setup_threads
from torch import Tensor

from advimage.attacks import HopSkipJump, create_attack
from advimage.threat import l2_norms

EPS = 8 / 255
STEPS = 10
ALPHA = EPS / STEPS  # the MI-FGSM paper's alpha = eps / T


def transfer_table(model: torch.nn.Module, x: Tensor, y: Tensor, repeats: int) -> None:
    import torchattacks

    def ours(**opts: object) -> object:
        attack = create_attack("pgd", eps=EPS, steps=STEPS, step_size=ALPHA,
                               random_start=False, early_stop=False, **opts)
        return lambda: attack(model, x, y)

    ta = {
        "torchattacks MIFGSM": torchattacks.MIFGSM(model, eps=EPS, alpha=ALPHA, steps=STEPS,
                                                   decay=1.0),
        "torchattacks TIFGSM (MI-TI, DI off)": torchattacks.TIFGSM(
            model, eps=EPS, alpha=ALPHA, steps=STEPS, decay=1.0, len_kernel=5, nsig=3,
            diversity_prob=0.0),
        "torchattacks TIFGSM (MI-DI-TI)": torchattacks.TIFGSM(
            model, eps=EPS, alpha=ALPHA, steps=STEPS, decay=1.0, len_kernel=5, nsig=3,
            diversity_prob=0.5, resize_rate=0.9),
    }
    contenders = {
        "advimage pgd momentum=1": ours(momentum=1.0),
        "advimage pgd momentum=1 ti_kernel=5": ours(momentum=1.0, ti_kernel=5),
        "advimage pgd momentum=1 ti_kernel=5 diversity_prob=0.5": ours(
            momentum=1.0, ti_kernel=5, diversity_prob=0.5),
        **{name: (lambda a=a: a(x, y).detach()) for name, a in ta.items()},
    }
    res = interleaved(contenders, repeats)
    print(f"\n## MI / TI / DI, white-box on resnet20, batch {len(x)}, eps 8/255, {STEPS} steps "
          f"of 0.8/255, median of {repeats}\n")
    print("| contender | median s | robust acc. % (resnet20) |")
    print("|---|---:|---:|")
    for name, (sec, adv) in res.items():
        print(f"| {name} | {sec:.3f} | {robust_pct(model, adv, y):.2f} |")
    pairs = [("advimage pgd momentum=1", "torchattacks MIFGSM"),
             ("advimage pgd momentum=1 ti_kernel=5", "torchattacks TIFGSM (MI-TI, DI off)"),
             ("advimage pgd momentum=1 ti_kernel=5 diversity_prob=0.5",
              "torchattacks TIFGSM (MI-DI-TI)")]
    for a, b in pairs:
        print(f"\n{b} / {a}: {res[b][0] / res[a][0]:.2f}x", end="")
    print()


def hsj_table(model: torch.nn.Module, x: Tensor, y: Tensor, steps: int) -> None:
    ok = peers.robust_mask(model, x, y)
    x, y = x[ok], y[ok]

    def median_l2(adv: Tensor) -> float:
        d = l2_norms(adv - x)
        d[peers.robust_mask(model, adv, y)] = math.inf  # not adversarial: no distance
        return float(d.median())

    rows = []
    for name, fn in (("foolbox HopSkipJump (batched)", peers.fb_hsj),
                     ("ART HopSkipJump (per image)", peers.art_hsj)):
        torch.manual_seed(0)
        start = time.perf_counter()
        adv, q = fn(model, x, y, steps)
        sec = time.perf_counter() - start
        rows.append((name, sec, q, median_l2(adv)))
        attack = HopSkipJump(norm="l2", queries=math.ceil(q), steps=10_000)
        start = time.perf_counter()
        res = attack.run(model, x, y)
        sec = time.perf_counter() - start
        rows.append((f"advimage hsj, queries={math.ceil(q)}", sec,
                     float(res.queries.float().mean()), median_l2(res.x_adv)))
    print(f"\n## HopSkipJump L2 on resnet20, {len(x)} correctly classified images, peers "
          f"{steps} iterations, advimage at the peer's mean queries\n")
    print("| contender | s | mean queries / image | median L2 |")
    print("|---|---:|---:|---:|")
    for name, sec, q, med in rows:
        print(f"| {name} | {sec:.2f} | {q:.0f} | {med:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--n", type=int, default=64, help="images for the MI/TI/DI table")
    parser.add_argument("--hsj-n", type=int, default=10, help="images for the HSJ table")
    parser.add_argument("--hsj-steps", type=int, default=5, help="peer HSJ iterations")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per contender")
    args = parser.parse_args()
    setup_threads(args.threads)
    print(header("Transfer options and HopSkipJump vs torchattacks, Foolbox, ART"))
    model, x, y = load_cifar(args.shared, args.n)
    transfer_table(model, x, y, args.repeats)
    model, x, y = load_cifar(args.shared, args.hsj_n)
    hsj_table(model, x, y, args.hsj_steps)


if __name__ == "__main__":
    main()
