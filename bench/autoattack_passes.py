"""How many model passes each AutoAttack member makes: advimage vs the original (a script).

Croce & Hein (ICML 2020), version ``standard``, the adversarially trained MNIST LeNet5 at eps
0.3 on the first N test images. A forward hook on the model counts the images of every forward
pass, split into passes that build a graph (followed by an input-gradient backward pass) and
passes without one (queries, checks). Both chains run member by member on the points their own
previous members left robust, in chunks of 256 (ours) / 250 (the original's ``bs``). The
counts say where the wall time of ``autoattack_speed.py`` goes: a member whose passes match
the original's cannot be much faster than it on a CPU, where each pass of this model is
compute- and memory-bound. The hook disables advimage's traced forward for Square's queries
(a trace would not run a Python hook), so the times printed here are not those of
``autoattack_speed.py``; only the counts are the point.

    python bench/autoattack_passes.py --n 50 --threads 1
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import torch
from autoattack_stages import EPS, original_chain
from common import add_common_args, header, load_mnist, setup_threads
from torch import Tensor, nn

from advimage.attacks import AutoAttack

CHUNK = 256  # advimage's default batch_size


class PassCounter:
    """Forward-hook counter: images forwarded with a graph (``grad``) and without (``nograd``)."""

    def __init__(self, model: nn.Module) -> None:
        self.counts: Counter[str] = Counter()
        model.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        kind = "grad" if output.requires_grad else "nograd"
        self.counts[kind] += int(inputs[0].shape[0])

    def take(self) -> Counter[str]:
        """The counts since the last call."""
        out, self.counts = self.counts, Counter()
        return out


def ours_chain(model: nn.Module, x: Tensor, y: Tensor, seed: int, counter: PassCounter
               ) -> list[tuple[str, int, Counter[str], float]]:
    """advimage's members in turn, each on the points the earlier ones left robust."""
    aa = AutoAttack(eps=EPS, norm="linf", version="standard", seed=seed)
    with torch.no_grad():
        robust = model(x).argmax(1) == y
    counter.take()
    rows = []
    for name in ("apgd-ce", "apgd-t", "fab-t", "square"):
        member = aa.member(name)
        idx = robust.nonzero().flatten()
        t0 = time.perf_counter()
        for chunk in idx.split(CHUNK):
            adv = member(model, x[chunk], y[chunk])
            with torch.no_grad():
                robust[chunk] = model(adv).argmax(1) == y[chunk]
        rows.append((name, int(idx.numel()), counter.take(), time.perf_counter() - t0))
    return rows


def original_counts(model: nn.Module, x: Tensor, y: Tensor, seed: int, counter: PassCounter
                    ) -> list[tuple[str, int, Counter[str], float]]:
    """The original's members through :func:`autoattack_stages.original_chain` (its own
    classes, each on the points the earlier ones left robust)."""
    rows: list[tuple[str, int, Counter[str], float]] = []
    counter.take()
    original_chain(model, x, y, seed,
                   on_stage=lambda name, n, s: rows.append((name, n, counter.take(), s)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    setup_threads(args.threads)
    model, x, y = load_mnist(args.shared, args.n)
    counter = PassCounter(model)
    results = {"original (pyautoattack)": original_counts(model, x, y, args.seed, counter),
               "advimage": ours_chain(model, x, y, args.seed, counter)}
    print(header(f"AutoAttack standard, passes per member: LeNet5 (adv. trained), MNIST, "
                 f"eps {EPS}, {args.n} points"))
    print("\nimages forwarded per member (grad: with a graph and an input-gradient backward; "
          "nograd: forward only); per attacked point in brackets\n")
    print("| member | library | points attacked | grad passes | nograd passes | s |")
    print("|---|---|---:|---:|---:|---:|")
    for i, name in enumerate(("apgd-ce", "apgd-t", "fab-t", "square")):
        for lib, rows in results.items():
            _, n, c, s = rows[i]
            cells = [f"{c[k]} ({c[k] / n:.0f})" if n else str(c[k]) for k in ("grad", "nograd")]
            print(f"| {name} | {lib} | {n} | {cells[0]} | {cells[1]} | {s:.1f} |")


if __name__ == "__main__":
    main()
