"""Minimal-norm and L1 attacks against their peers: wall time and median minimal norm.

FMN (L-inf, L2, L1, L0) vs Foolbox 3.3's FMN; DDN vs Foolbox's DDN; DeepFool (L2, L-inf) vs
Foolbox's DeepFool (and torchattacks' for L2); l1-APGD vs the original AutoAttack's
(``pyautoattack``) at one L1 budget (robust accuracy instead of a norm). Same model object and
images for every contender, ours and the peer interleaved per row, each timed once after one
warm-up call of the pair; the median norm counts ``inf`` where an attack failed.

    PYTHONPATH=src python bench/minimal_norm_speed.py --n 100 --threads 2 [--rows "fmn l0,ddn l2"]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch
from common import add_common_args, header, load_mnist, peers, setup_threads
from torch import Tensor

from advimage.attacks import APGD, DDN, FMN, DeepFool
from advimage.lp_balls import lp_norms


def _median(model, x: Tensor, y: Tensor, adv: Tensor, norm: str) -> float:
    with torch.no_grad():
        fooled = model(adv).argmax(1) != y
    return float(torch.where(fooled, lp_norms(adv - x, norm), math.inf).median())


def _timed(fn: Callable[[], Tensor]) -> tuple[Tensor, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    add_common_args(p)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--l1-eps", type=float, default=10.0, help="l1-APGD budget (MNIST: 10)")
    p.add_argument("--rows", default=None,
                   help="comma-separated row labels to run (e.g. 'fmn l0,ddn l2,deepfool l2'); "
                        "'apgd' selects the l1-APGD row; default: every row")
    a = p.parse_args()
    wanted = None if a.rows is None else {r.strip() for r in a.rows.split(",")}
    setup_threads(a.threads)
    model, x, y = load_mnist(a.shared, a.n)
    print(header(f"minimal-norm attacks vs peers, MNIST LeNet5 (adv. trained), n={a.n}"))
    rows: list[tuple[str, str, Callable[[], Tensor], str, Callable[[], Tensor]]] = []
    for norm in ("linf", "l2", "l1", "l0"):
        rows.append((f"fmn {norm}", norm, lambda n=norm: FMN(norm=n).run(model, x, y).x_adv,
                     "foolbox", lambda n=norm: peers.fb_fmn(model, x, y, n)))
    rows.append(("ddn l2", "l2", lambda: DDN().run(model, x, y).x_adv,
                 "foolbox", lambda: peers.fb_ddn(model, x, y)))
    for norm in ("l2", "linf"):
        rows.append((f"deepfool {norm}", norm,
                     lambda n=norm: DeepFool(norm=n).run(model, x, y).x_adv,
                     "foolbox", lambda n=norm: peers.fb_deepfool(model, x, y, n)))
    rows.append(("deepfool l2", "l2", lambda: DeepFool().run(model, x, y).x_adv,
                 "torchattacks", lambda: peers.ta_deepfool(model, x, y)))
    print("| attack | peer | ours s | peer s | speed-up | ours median | peer median |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, norm, ours, peer_name, peer in rows:
        if wanted is not None and label not in wanted:
            continue
        a_adv, ta = _timed(ours)
        b_adv, tb = _timed(peer)
        ma, mb = _median(model, x, y, a_adv, norm), _median(model, x, y, b_adv, norm)
        print(f"| {label} | {peer_name} | {ta:.2f} | {tb:.2f} | {tb / ta:.2f}x | "
              f"{ma:.4g} | {mb:.4g} |")
    if wanted is not None and "apgd" not in wanted:
        return
    eps = a.l1_eps
    a_adv, ta = _timed(lambda: APGD(norm="l1", eps=eps, steps=100)(model, x, y))
    b_adv, tb = _timed(lambda: peers.pa_apgd(model, x, y, eps, 100))
    with torch.no_grad():
        ra = (model(a_adv).argmax(1) == y).float().mean().item() * 100
        rb = (model(b_adv).argmax(1) == y).float().mean().item() * 100
    print(f"| apgd-ce l1 eps={eps:g} (robust %) | pyautoattack | {ta:.2f} | {tb:.2f} | "
          f"{tb / ta:.2f}x | {ra:.1f} | {rb:.1f} |")


if __name__ == "__main__":
    main()
