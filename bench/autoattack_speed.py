"""advimage's AutoAttack ensemble vs torchattacks' AutoAttack (standard) on MNIST (a script).

Croce & Hein (ICML 2020). Adversarially trained LeNet5 (advertorch), eps = 0.3, the first N
MNIST test images (default 1,000). Both ensembles run in the same process on the same tensors;
targets: our robust accuracy at most 0.5 point above torchattacks' and our wall time at most a
third of theirs. Also APGD-CE (100 steps) alone, ours against torchattacks' ``APGD``.

torchattacks' standard version runs APGD-CE, APGD-T (9 targets), FAB-T (9 targets) and Square
(5,000 queries), but with its classes' default of 10 iterations for APGD, APGD-T and FAB (the
paper uses 100), so it does about a fifth of the paper's gradient work; ours omits FAB-T and
uses the paper's 100 steps. So the script also runs our ensemble with torchattacks' budgets
(APGD-CE 10 steps, APGD-T 9 x 10 steps, Square 5,000 queries): the like-for-like timing.
Ours attacks in chunks of 256 points (the reference implementation's ``bs`` is 250) and runs
Square's queries through an inference-optimised trace on the CPU; torchattacks attacks all
points in one batch.
The script first times torchattacks on ``--pilot`` points; if the full N would take longer
than ``--peer-minutes``, it compares on fewer points (a multiple of the pilot size) and says so.

    python bench/autoattack_speed.py [--n 1000] [--pilot 100] [--peer-minutes 20]
"""

from __future__ import annotations

import argparse

import torch
from common import add_common_args, header, load_mnist, peers, robust_pct, setup_threads, timed

from advimage.attacks import APGD, APGDT, Attack, AutoAttack, Square, create_attack

EPS = 0.3  # linf budget, [0, 1] pixel units
MAX_GAP = 0.5  # points: our robust accuracy may exceed torchattacks' by at most this
MAX_TIME_RATIO = 1 / 3  # our wall time / torchattacks' wall time


class TorchattacksBudgetAutoAttack(AutoAttack):
    """Our ensemble with the iteration budgets torchattacks' "standard" actually uses."""

    def members(self) -> list[Attack]:
        common = {"eps": self.eps, "norm": self.norm, "seed": self.seed, "bounds": self.bounds}
        return [
            APGD(loss="ce", steps=10, **common),
            APGDT(loss="dlr", steps=10, n_target_classes=9, **common),
            Square(queries=5000, p_init=0.8, **common),
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--n", type=int, default=1000, help="points (first N MNIST test images)")
    parser.add_argument("--pilot", type=int, default=100, help="points for the time estimate")
    parser.add_argument("--peer-minutes", type=float, default=20.0,
                        help="longest torchattacks AutoAttack run allowed (minutes)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    setup_threads(args.threads)
    model, x_all, y_all = load_mnist(args.shared, args.n)

    # 1. estimate torchattacks' time on the pilot points
    pilot = min(args.pilot, args.n)
    torch.manual_seed(args.seed)
    t_pilot, adv_pilot = timed(lambda: peers.ta_autoattack(
        model, x_all[:pilot], y_all[:pilot], EPS, seed=args.seed))
    projected = t_pilot * args.n / pilot
    n = args.n
    if projected > args.peer_minutes * 60:
        n = max(pilot, int(args.peer_minutes * 60 / t_pilot) * pilot)
        n = min(n, args.n)
    print(f"torchattacks AutoAttack on {pilot} pilot points: {t_pilot:.1f}s -> {args.n} points "
          f"projected {projected / 60:.1f} min; comparing on {n} points", flush=True)
    x, y = x_all[:n], y_all[:n]

    # 2. both ensembles on the same n points (the pilot run is reused when n == pilot)
    if n == pilot:
        t_ta, adv_ta = t_pilot, adv_pilot
    else:
        torch.manual_seed(args.seed)
        t_ta, adv_ta = timed(lambda: peers.ta_autoattack(model, x, y, EPS, seed=args.seed))
    ours_attack = AutoAttack(eps=EPS, version="standard", seed=args.seed)
    t_ours, ours = timed(lambda: ours_attack.run(model, x, y))
    adv_ours = ours.x_adv
    matched = TorchattacksBudgetAutoAttack(eps=EPS, seed=args.seed)
    t_matched, matched_run = timed(lambda: matched.run(model, x, y))
    adv_matched = matched_run.x_adv

    # 3. APGD-CE, 100 steps, alone
    t_apgd_ta, adv_apgd_ta = timed(lambda: peers.ta_apgd(model, x, y, EPS, 100, seed=args.seed))
    apgd = create_attack("apgd-ce", eps=EPS, steps=100, seed=args.seed)
    t_apgd, adv_apgd = timed(lambda: apgd(model, x, y))

    print()
    print(header(f"AutoAttack speed: LeNet5 (adv. trained), MNIST, eps 0.3, first {n} test "
                 f"images{'' if n == args.n else f' (of {args.n} asked: time cap)'}"))
    print()
    print(f"clean accuracy: {robust_pct(model, x, y):.2f}%")
    print()
    print("| attack | library | robust acc. % | wall s | ours / theirs time |")
    print("|---|---|---:|---:|---:|")
    r_ta, r_ours = robust_pct(model, adv_ta, y), robust_pct(model, adv_ours, y)
    print(f"| AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square) | torchattacks | {r_ta:.2f} "
          f"| {t_ta:.1f} | |")
    print(f"| AutoAttack standard (APGD-CE, APGD-T, Square) | advimage | {r_ours:.2f} "
          f"| {t_ours:.1f} | {t_ours / t_ta:.3f} |")
    print(f"| AutoAttack, torchattacks' budgets (APGD-CE 10, APGD-T 9x10, Square) | advimage "
          f"| {robust_pct(model, adv_matched, y):.2f} | {t_matched:.1f} "
          f"| {t_matched / t_ta:.3f} |")
    print(f"| APGD-CE 100 steps | torchattacks | {robust_pct(model, adv_apgd_ta, y):.2f} "
          f"| {t_apgd_ta:.1f} | |")
    print(f"| APGD-CE 100 steps | advimage | {robust_pct(model, adv_apgd, y):.2f} "
          f"| {t_apgd:.1f} | {t_apgd / t_apgd_ta:.3f} |")
    print()
    for label, rep in (("standard", ours.report), ("torchattacks' budgets", matched_run.report)):
        print(f"advimage ensemble stages ({label}):")
        for s in rep.stages:
            print(f"  {s.name:10s} attacked {s.n_attacked:5d}  fooled {s.n_fooled:4d}  "
                  f"robust after {100 * s.robust_accuracy:6.2f}%  {s.seconds:7.1f}s")
    gap = r_ours - r_ta
    print(f"robust accuracy ours - torchattacks = {gap:+.2f} pt (target <= +{MAX_GAP}): "
          f"{'met' if gap <= MAX_GAP else 'MISSED'}")
    ratio = t_ours / t_ta
    print(f"time ours / torchattacks = {ratio:.3f} (target <= {MAX_TIME_RATIO:.3f}): "
          f"{'met' if ratio <= MAX_TIME_RATIO else 'MISSED'}")


if __name__ == "__main__":
    main()
