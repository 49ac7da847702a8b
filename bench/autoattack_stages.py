"""Stage by stage: advimage's AutoAttack members vs the original's (``pyautoattack``) (a script).

Croce & Hein (ICML 2020). Adversarially trained LeNet5, MNIST, eps 0.3, first N test images.
Both chains run on the same points; after each stage the script prints which points each
chain still holds robust, so a point the original fools and advimage does not is traced to
the stage that fooled it. Then each such stage is re-run from advimage's side on exactly the
points the original's stage received.

    python bench/autoattack_stages.py [--n 200] [--threads 2]
    python bench/autoattack_stages.py --n 1000 --skip 200 --stages 2 --threads 1

``--skip K`` drops the first K of the N points (points already compared), ``--stages S`` runs
the first S members of both chains only (2: APGD-CE and APGD-T). Point indices printed are
indices into the first N test images.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import add_common_args, load_mnist, setup_threads

from advimage.attacks import AutoAttack

EPS = 0.3


def original_member(aa, name: str, x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
    """Adversarial images of member ``name`` of the original's ensemble ``aa`` (a
    ``pyautoattack.AutoAttack``, its standard-version budgets) on ``x``, ``y``."""
    if name == "apgd-ce":
        aa.apgd.loss, aa.apgd.seed = "ce", seed
        return aa.apgd.perturb(x, y)
    if name == "apgd-t":
        aa.apgd_targeted.seed = seed
        return aa.apgd_targeted.perturb(x, y)
    if name == "fab-t":
        aa.fab.targeted, aa.fab.n_restarts, aa.fab.seed = True, 1, seed
        return aa.fab.perturb(x, y)
    aa.square.seed = seed
    return aa.square.perturb(x, y)


def original_chain(model, x, y, seed: int, norm: str = "Linf", stages: int | None = None,
                   on_stage=None) -> dict[str, torch.Tensor]:
    """Robust flags after each stage of pyautoattack's standard version (its own loop);
    ``on_stage(name, n_attacked, seconds)`` is called after each stage."""
    from pyautoattack import AutoAttack as PyAA

    aa = PyAA(model, eps=EPS, norm=norm, seed=seed, version="standard")
    with torch.no_grad():
        robust = model(x).argmax(1) == y
    flags = {"clean": robust.clone()}
    for name in aa.attacks_to_run[:stages]:
        idx = robust.nonzero().flatten()
        t0 = time.perf_counter()
        if len(idx):
            xs, ys = x[idx], y[idx]
            adv = original_member(aa, name, xs, ys, seed)
            with torch.no_grad():
                robust[idx] = model(adv).argmax(1) == ys
        flags[name] = robust.clone()
        seconds = time.perf_counter() - t0
        print(f"original {name:8s} robust {int(robust.sum()):4d}  {seconds:6.1f}s", flush=True)
        if on_stage is not None:
            on_stage(name, int(idx.numel()), seconds)
    return flags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", type=int, default=0, help="drop the first K points")
    parser.add_argument("--stages", type=int, default=None, help="run the first S members")
    args = parser.parse_args()
    setup_threads(args.threads)
    model, x, y = load_mnist(args.shared, args.n)
    x, y, k0 = x[args.skip:], y[args.skip:], args.skip
    orig = original_chain(model, x, y, args.seed, stages=args.stages)
    stages = args.stages

    class Chain(AutoAttack):
        def members(self) -> list:  # the first ``stages`` members only
            return super().members()[:stages]

    res = Chain(eps=EPS, seed=args.seed).run(model, x, y)
    for k, s in enumerate(res.report.stages):
        hit = ((res.report.fooled_by == k).nonzero().flatten() + k0).tolist()
        print(f"advimage {s.name:10s} robust {int(round(s.robust_accuracy * len(x))):4d}  "
              f"{s.seconds:6.1f}s  fooled {hit}")
    last = orig[list(orig)[-1]]
    only_orig = (res.report.robust & ~last).nonzero().flatten() + k0
    only_ours = (~res.report.robust & last).nonzero().flatten() + k0
    print(f"robust for advimage, fooled by the original: {only_orig.tolist()}")
    print(f"robust for the original, fooled by advimage: {only_ours.tolist()}")
    names = [k for k in orig if k != "clean"]
    prev = orig["clean"]
    for name in names:
        hit = prev & ~orig[name]
        print(f"  original {name}: fooled {(hit.nonzero().flatten() + k0).tolist()}")
        prev = orig[name]


if __name__ == "__main__":
    main()
