"""Speed of PGD-Linf in advimage vs a bare torch loop, torchattacks, Foolbox and ART (a script).

Reference ResNet-20 on CIFAR-10 test images (class-balanced: every (10000 // B)-th image of the
class-sorted split), one batch of 256, eps = 8/255, 10 steps of 2/255, no random start, CPU
with torch's default threads. Two measurements, all contenders in the same run:

1. *Same work*: advimage with ``early_stop=False`` (exactly the bare loop's forwards and
   backwards) against the hand-written loop and the peers. Median wall time over
   ``--repeats`` runs after one warm-up, the repeats interleaved round-robin so background
   load hits every contender alike. Targets: advimage / bare <= 1.05, advimage faster than
   every peer.
2. *Time to robust accuracy*: advimage in evaluation mode (``early_stop=True``: fooled points
   leave the batch) against the same peer runs, since all that matters there is the robust
   accuracy, which is printed for every contender (they must agree).

    python bench/attack_speed.py [--repeats 5] [--batch-size 256] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from common import (
    add_common_args,
    bare_pgd,
    header,
    load_cifar,
    peers,
    robust_pct,
    setup_threads,
    sync_device,
)
from torch import Tensor

from advimage.attacks import create_attack

EPS = 8 / 255  # linf budget, [0, 1] pixel units
ALPHA = 2 / 255  # step size (= our default 2.5 * eps / steps for 10 steps)
# advimage/bare time ratio the engine must stay under (5% overhead).
TARGET_OVERHEAD = 1.05


def interleaved(
    contenders: dict[str, Callable[[], Tensor]], repeats: int
) -> dict[str, tuple[float, Tensor]]:
    """Median seconds per contender (one warm-up each, then round-robin repeats)."""
    out: dict[str, Tensor] = {name: fn() for name, fn in contenders.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            torch.manual_seed(0)
            sync_device()
            start = time.perf_counter()
            out[name] = fn()
            sync_device()  # CUDA runs asynchronously: time the work, not its queueing
            times[name].append(time.perf_counter() - start)
            print(f"  {name}: {times[name][-1]:.2f}s", flush=True)
    return {name: (statistics.median(t), out[name]) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per contender")
    parser.add_argument("--batch-size", type=int, default=256, help="images in the batch")
    parser.add_argument("--steps", type=int, default=10, help="PGD steps")
    parser.add_argument("--quick", action="store_true", help="batch 64, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.batch_size, args.repeats = 64, 2
    setup_threads(args.threads)
    model, x, y = load_cifar(args.shared, args.batch_size)
    steps = args.steps

    def ours(early_stop: bool) -> Callable[[], Tensor]:
        attack = create_attack("pgd", eps=EPS, steps=steps, step_size=ALPHA,
                               random_start=False, early_stop=early_stop)
        return lambda: attack(model, x, y)

    peer_fns = {
        "torchattacks": lambda: peers.ta_pgd(model, x, y, EPS, ALPHA, steps),
        "foolbox": lambda: peers.fb_pgd(model, x, y, EPS, ALPHA, steps),
        "art": lambda: peers.art_pgd(model, x, y, EPS, ALPHA, steps),
    }
    contenders = {
        "bare torch loop": lambda: bare_pgd(model, x, y, EPS, ALPHA, steps),
        "advimage (early_stop=False)": ours(False),
        "advimage (early_stop=True)": ours(True),
        **peer_fns,
    }
    res = interleaved(contenders, args.repeats)

    print(header(f"PGD-Linf speed: resnet20, CIFAR-10, batch {args.batch_size}, eps 8/255, "
                 f"{steps} steps of 2/255, no random start, median of {args.repeats}"))
    print()
    print(f"clean accuracy: {robust_pct(model, x, y):.2f}%")
    print()
    base = res["bare torch loop"][0]
    same = res["advimage (early_stop=False)"][0]
    fast = res["advimage (early_stop=True)"][0]
    print("| contender | median s | robust acc. % | / bare | advimage (same work) faster by |"
          " advimage (eval mode) faster by |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (sec, adv) in res.items():
        rob = robust_pct(model, adv, y)
        vs_same = f"{sec / same:.2f}x" if name in peer_fns else ""
        vs_fast = f"{sec / fast:.2f}x" if name in peer_fns else ""
        print(f"| {name} | {sec:.3f} | {rob:.2f} | {sec / base:.3f} | {vs_same} | {vs_fast} |")
    print()
    ratio = same / base
    ok_bare = ratio <= TARGET_OVERHEAD
    slower = [n for n in peer_fns if res[n][0] <= same]
    print(f"advimage/bare = {ratio:.3f} (target <= {TARGET_OVERHEAD}): "
          f"{'met' if ok_bare else 'MISSED'}")
    print("advimage (same work) faster than every peer: "
          + ("yes" if not slower else f"NO (not faster than {', '.join(slower)})"))


if __name__ == "__main__":
    main()
