"""One AutoAttack member, advimage's vs the original's (``pyautoattack``), over seeds (a script).

Croce & Hein (ICML 2020). Adversarially trained LeNet5, MNIST, eps 0.3, first N test images.
Both libraries run the member on exactly the same points, once per seed, so a systematic
difference in strength shows as a difference in the mean number of points fooled, apart from
the seed-to-seed spread (which also comes from how points fall into chunks).

    python bench/autoattack_member_seeds.py --member apgd-ce --seeds 0,1,2,3 --save /tmp/ce.pt
    python bench/autoattack_member_seeds.py --member apgd-t --points /tmp/ce.pt --seeds 0,1

``--points F`` attacks only the points left robust by every run saved in ``F`` (by
``--save`` of an earlier member); without it, the points the model classifies correctly.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from autoattack_stages import EPS, original_member
from common import add_common_args, header, load_mnist, peers, setup_threads

from advimage.attacks import AutoAttack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--member", choices=("apgd-ce", "apgd-t", "fab-t", "square"),
                        required=True)
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--points", type=Path, help="attack the points robust in this file")
    parser.add_argument("--save", type=Path, help="save the points each run left robust")
    args = parser.parse_args()
    setup_threads(args.threads)
    model, x, y = load_mnist(args.shared, args.n)
    if args.points is not None:
        idx = torch.load(args.points)["robust_all"].nonzero().flatten()
    else:
        with torch.no_grad():
            idx = (model(x).argmax(1) == y).nonzero().flatten()
    xs, ys = x[idx], y[idx]
    print(header(f"AutoAttack member {args.member}: LeNet5 (adv. trained), MNIST, eps {EPS}, "
                 f"{len(idx)} of the first {args.n} points"), flush=True)
    counts: dict[str, list[int]] = {"original": [], "advimage": []}
    hits: dict[str, torch.Tensor] = {k: torch.zeros(len(idx)) for k in counts}
    robust_all = torch.zeros(args.n, dtype=torch.bool)
    robust_all[idx] = True
    for seed in (int(s) for s in args.seeds.split(",")):
        for lib in counts:
            t0 = time.perf_counter()
            if lib == "original":
                from pyautoattack import AutoAttack as PyAA

                aa = PyAA(model, eps=EPS, norm="Linf", seed=seed, version="standard")
                adv = original_member(aa, args.member, xs, ys, seed)
            else:
                adv = AutoAttack(eps=EPS, seed=seed).member(args.member)(model, xs, ys)
            with torch.no_grad():
                f = ~peers.robust_mask(model, adv, ys)
            counts[lib].append(int(f.sum()))
            hits[lib] += f.float()
            robust_all[idx[f]] = False
            print(f"seed {seed} {lib:9s} fooled {int(f.sum()):4d}  "
                  f"{time.perf_counter() - t0:7.1f}s  {idx[f].tolist()}", flush=True)
    for lib, c in counts.items():
        print(f"{lib:9s} fooled per seed {c}  mean {statistics.mean(c):.2f}")
    diff = (hits["original"] - hits["advimage"]).nonzero().flatten()
    print("points fooled a different number of times (index: original, advimage): "
          + ", ".join(f"{int(idx[i])}: {int(hits['original'][i])}, {int(hits['advimage'][i])}"
                      for i in diff))
    if args.save is not None:
        torch.save({"robust_all": robust_all, "member": args.member}, args.save)


if __name__ == "__main__":
    main()
