"""Gradient passes in slices of ``GRADIENT_ROWS`` rows vs one pass over the batch (a script).

:func:`advimage.attacks.gradient.input_gradient` (and FAB's linearisation) runs a batch above
``GRADIENT_ROWS`` (64) rows in near-equal slices. This script measures what that buys on the
passes attacks are made of, with glibc's default malloc (the settings every benchmark uses): the
adversarially trained MNIST LeNet5 at 250 rows (AutoAttack's chunk) and the CIFAR-10 ResNet-20 at
256 rows, one CE forward+backward to the input; then the AutoAttack members APGD-T and FAB-T
(3 target classes each) on 250 MNIST points. The baseline sets ``GRADIENT_ROWS`` above the batch,
i.e. one pass, the code before the slicing. Each setting runs in its own child process (malloc's
state depends on the process's history: the members run first, as in a user's script, then the
single passes), alternating twice; best of the two. The script also
checks that both settings give the same numbers bit for bit, and counts minor page faults.

    python bench/gradient_rows.py [--repeats 15] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

import torch
from common import add_common_args, header, load_cifar, load_mnist, setup_threads

import advimage.attacks.gradient as gradient_module
from advimage.attacks import AutoAttack
from advimage.attacks.gradient import input_gradient
from advimage.attacks.losses import ce_loss

ONE_PASS = 10**9  # GRADIENT_ROWS for the baseline: never slice


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _pass_times(shared, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (model, x, y) in (("lenet5 mnist b250", load_mnist(shared, 250)),
                                ("resnet20 cifar10 b256", load_cifar(shared, 256))):
        def one(model=model, x=x, y=y) -> torch.Tensor:  # noqa: ANN001 (bound per model)
            return input_gradient(model, x, ce_loss, per_row=(y, None))[0]

        for _ in range(3):
            grad = one()
        times, f0 = [], _faults()
        for _ in range(repeats):
            t0 = time.perf_counter()
            one()
            times.append(time.perf_counter() - t0)
        out[name] = {"ms": 1000 * sorted(times)[len(times) // 2],
                     "faults": (_faults() - f0) / repeats, "sum": grad.double().sum().item(),
                     "bits": grad.view(torch.int32).long().sum().item()}
    return out


def _members(shared) -> dict[str, Any]:
    model, x, y = load_mnist(shared, 300)
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    x, y = x[keep][:250], y[keep][:250]
    aa = AutoAttack(eps=0.3, norm="linf", version="standard", seed=0)
    out: dict[str, Any] = {}
    for name in ("apgd-t", "fab-t"):
        member = aa.member(name)
        member.n_target_classes = 3  # type: ignore[attr-defined]
        f0, t0 = _faults(), time.perf_counter()
        adv = member(model, x, y)
        out[f"{name} (3 targets, 250 points)"] = {
            "ms": 1000 * (time.perf_counter() - t0), "faults": _faults() - f0,
            "sum": adv.double().sum().item(), "bits": adv.view(torch.int32).long().sum().item()}
    return out


def child(args: argparse.Namespace) -> None:
    setup_threads(args.threads)
    if args.one_pass:
        gradient_module.GRADIENT_ROWS = ONE_PASS
    members = _members(args.shared)  # first, in a fresh process, as a user's script would
    print(json.dumps({**_pass_times(args.shared, args.repeats), **members}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--one-pass", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for one_pass in (True, False, True, False):  # alternate, so drifting load hits both
        cmd = [sys.executable, __file__, "--child", "--repeats", str(args.repeats),
               "--shared", str(args.shared)] + (["--one-pass"] if one_pass else [])
        if args.threads is not None:
            cmd += ["--threads", str(args.threads)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        runs[one_pass].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(header(f"Gradient passes: slices of {gradient_module.GRADIENT_ROWS} rows vs one pass "
                 f"({torch.get_num_threads() if args.threads is None else args.threads} threads)"))
    print("\n| work | one pass ms | faults | sliced ms | faults | speed-up | same bits |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for key in runs[True][0]:
        base = min(r[key]["ms"] for r in runs[True])
        fast = min(r[key]["ms"] for r in runs[False])
        same = all(r[key]["bits"] == runs[True][0][key]["bits"]
                   and r[key]["sum"] == runs[True][0][key]["sum"]
                   for r in runs[True] + runs[False])
        print(f"| {key} | {base:.1f} | {runs[True][0][key]['faults']:.0f} | {fast:.1f} | "
              f"{runs[False][0][key]['faults']:.0f} | {base / fast:.2f}x | "
              f"{'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
