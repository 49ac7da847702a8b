"""Eager CPU passes: glibc's default malloc vs advimage.allocator.retain_freed_memory() (a script).

Each setting runs in its own child process (the glibc settings are process-wide and cannot be
undone), alternating twice, on the same models and inputs: the adversarially trained MNIST
LeNet5 at batch 270 (the AutoAttack benchmark's Square batch) and the CIFAR-10 ResNet-20 at batch
256 (the PGD benchmark's), forward without gradients and forward+backward to the input (one
attack step). Prints the median times and the speed-up; the CLI applies the setting by default.

    python bench/cpu_allocator.py [--repeats 20] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable

import torch
from common import add_common_args, header, load_cifar, load_mnist, median_time, setup_threads
from torch import Tensor, nn

from advimage.allocator import ENV_VAR, retain_freed_memory


def _passes(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Callable[[], Tensor]]:
    def fwd() -> Tensor:
        with torch.no_grad():
            return model(x)

    def fwd_bwd() -> Tensor:
        xg = x.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(xg), y, reduction="sum")
        return torch.autograd.grad(loss, xg)[0]

    return {"forward": fwd, "forward+backward": fwd_bwd}


def child(args: argparse.Namespace) -> None:
    applied = retain_freed_memory()  # honours ADVIMAGE_RETAIN_MEMORY set by the parent
    setup_threads(args.threads)
    out: dict[str, object] = {"applied": applied}
    for name, data in (("lenet5 mnist b270", load_mnist(args.shared, 270)),
                       ("resnet20 cifar10 b256", load_cifar(args.shared, 256))):
        for kind, fn in _passes(*data).items():
            out[f"{name} {kind}"] = median_time(fn, args.repeats, warmup=3)[0]
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    runs: dict[str, list[dict]] = {"0": [], "1": []}
    for setting in ("0", "1", "0", "1"):  # alternate, so drifting machine load hits both
        cmd = [sys.executable, __file__, "--child", "--repeats", str(args.repeats),
               "--shared", str(args.shared)]
        if args.threads is not None:
            cmd += ["--threads", str(args.threads)]
        env = {**os.environ, ENV_VAR: setting}
        done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
        runs[setting].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(header("CPU allocator: glibc defaults vs retain_freed_memory()"))
    print()
    print(f"settings applied in the retain runs: {all(r['applied'] for r in runs['1'])}")
    print()
    print("| pass | default ms | retained ms | speed-up |")
    print("|---|---:|---:|---:|")
    for key in (k for k in runs["0"][0] if k != "applied"):
        base = min(r[key] for r in runs["0"]) * 1000
        kept = min(r[key] for r in runs["1"]) * 1000
        print(f"| {key} | {base:.1f} | {kept:.1f} | {base / kept:.2f}x |")


if __name__ == "__main__":
    main()
