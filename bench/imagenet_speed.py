"""PGD-10 at 224 pixels on EfficientNet-Lite0: advimage vs a bare loop vs torchattacks (a script).

EfficientNet-Lite0 (the shared ImageNet weights when present, else random weights: the time is
the same), one batch of ImageNet validation images from ``../shared/data/imagenette/
imagenet-val`` (random pixels when absent), L-inf eps = 4/255, 10 steps of 1/255, no random
start. All contenders in the same run, each timed as the median of ``--repeats`` runs after a
warm-up, round-robin so background load hits every contender alike:

* *same work*, fp32: the hand-written loop, advimage's PGD with ``early_stop=False`` (the same
  forwards and backwards, plus the one clean forward its validation makes) and torchattacks;
  target advimage / bare <= 1.05;
* bf16 autocast (``--precision bf16``): the bare loop under ``torch.autocast`` and advimage on
  ``with_precision(model, "bf16")``; images, steps and projection stay fp32.

Peak memory per image: the rise of the process's peak resident set (``/proc/self/status``
VmHWM, reset through ``/proc/self/clear_refs`` after ``malloc_trim``) during one attack, divided
by the batch size;
on CUDA ``torch.cuda.max_memory_allocated`` over the batch's own tensors.

    python bench/imagenet_speed.py [--batch-size 32] [--repeats 3] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from attack_speed import interleaved
from common import add_common_args, bare_pgd, freeze, header, peers, setup_threads
from PIL import Image
from torch import Tensor, nn

from advimage.attacks import create_attack
from advimage.models import create_model, import_reference
from advimage.precision import autocast, with_precision

EPS, ALPHA, STEPS = 4 / 255, 1 / 255, 10
TARGET_OVERHEAD = 1.05
WEIGHTS = "efficientnet-lite0-57934424.pth"


def load_model(shared: Path, device: torch.device) -> tuple[nn.Module, str]:
    path = shared / "models" / WEIGHTS
    if path.is_file():
        return freeze(import_reference(path)).to(device), f"ImageNet weights ({WEIGHTS})"
    torch.manual_seed(0)
    return freeze(create_model("efficientnet-lite0", 1000)).to(device), "random weights"


def load_images(shared: Path, n: int, device: torch.device) -> tuple[Tensor, Tensor, str]:
    """``n`` 224x224 ImageNet-val images round-robin over the classes, labels 0..999."""
    root = shared / "data" / "imagenette"
    if not (root / "classes.tsv").is_file():
        g = torch.Generator().manual_seed(0)
        return (torch.rand(n, 3, 224, 224, generator=g).to(device),
                torch.randint(0, 1000, (n,), generator=g).to(device), "random pixels")
    rows = [line.split("\t") for line in (root / "classes.tsv").read_text().splitlines()[1:]]
    files = [sorted((root / "imagenet-val" / wnid).glob("*.JPEG")) for wnid, *_ in rows]
    xs, ys = [], []
    for i in range(n):
        k = i % len(rows)
        img = Image.open(files[k][i // len(rows)]).convert("RGB").resize((224, 224))
        xs.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1))
        ys.append(int(rows[k][1]))
    return (torch.stack(xs).to(device), torch.tensor(ys, device=device),
            f"{n} ImageNet-val images")


def peak_bytes(fn: Callable[[], Tensor], device: torch.device) -> float:
    """Peak memory (bytes) ``fn()`` adds on top of what is resident before it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return float(torch.cuda.max_memory_allocated() - before)
    status = Path("/proc/self/status")
    def kib(key: str) -> int:
        line = next(s for s in status.read_text().splitlines() if s.startswith(key))
        return int(line.split()[1])
    gc.collect()
    try:  # hand freed heap back first, or a later contender reuses resident pages unseen
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current VmRSS
    before = kib("VmRSS:")
    fn()
    return 1024.0 * (kib("VmHWM:") - before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per contender")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="bf16", help="reduced precision: bf16, or fp16 on CUDA")
    parser.add_argument("--no-amp", action="store_true", help="skip the autocast contenders")
    args = parser.parse_args()
    setup_threads(args.threads)
    dev = torch.device(args.device)
    model, weights = load_model(args.shared, dev)
    x, y, data = load_images(args.shared, args.batch_size, dev)
    amp = args.amp
    fast = with_precision(model, amp, dev)

    def ours(m: nn.Module) -> Callable[[], Tensor]:
        attack = create_attack("pgd", eps=EPS, steps=STEPS, step_size=ALPHA,
                               random_start=False, early_stop=False)
        return lambda: attack(m, x, y)

    def bare_amp() -> Tensor:
        with autocast(amp, dev):
            return bare_pgd(model, x, y, EPS, ALPHA, STEPS)

    contenders: dict[str, Callable[[], Tensor]] = {
        "bare torch loop": lambda: bare_pgd(model, x, y, EPS, ALPHA, STEPS),
        "advimage": ours(model),
    }
    if importlib.util.find_spec("torchattacks") is not None:
        contenders["torchattacks"] = lambda: peers.ta_pgd(model, x, y, EPS, ALPHA, STEPS)
    else:
        print("torchattacks is not installed here: its row is left out")
    if not args.no_amp:
        contenders[f"bare torch loop, {amp} autocast"] = bare_amp
        contenders[f"advimage --precision {amp}"] = ours(fast)
    res = interleaved(contenders, args.repeats)
    mem = {name: peak_bytes(fn, dev) for name, fn in contenders.items()}

    print(header(f"PGD-10 at 224 px: efficientnet-lite0 ({weights}), {data}, batch "
                 f"{args.batch_size}, eps 4/255, 10 steps of 1/255, no random start, "
                 f"device {dev}, median of {args.repeats}"))
    print()
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    print(f"clean accuracy (1000-way): {100 * clean:.1f}%")
    print()
    print("| contender | median s | s / image | / bare (same precision) | robust acc. % |"
          " peak MiB / image |")
    print("|---|---:|---:|---:|---:|---:|")
    base = {"fp32": res["bare torch loop"][0]}
    if not args.no_amp:
        base[amp] = res[f"bare torch loop, {amp} autocast"][0]
    for name, (sec, adv) in res.items():
        ref = base[amp] if amp in name else base["fp32"]
        with torch.no_grad():
            rob = 100 * (model(adv).argmax(1) == y).float().mean().item()
        print(f"| {name} | {sec:.2f} | {sec / args.batch_size:.3f} | {sec / ref:.3f} | "
              f"{rob:.1f} | {mem[name] / args.batch_size / 2**20:.1f} |")
    print()
    diff = (res["advimage"][1] - res["bare torch loop"][1]).abs().max().item()
    print(f"advimage vs bare loop (fp32): largest pixel difference {diff:.3g}")
    for p in base:
        ours_name = "advimage" if p == "fp32" else f"advimage --precision {p}"
        ratio = res[ours_name][0] / base[p]
        print(f"advimage/bare ({p}) = {ratio:.3f} (target <= {TARGET_OVERHEAD}): "
              f"{'met' if ratio <= TARGET_OVERHEAD else 'MISSED'}")
    if not args.no_amp:
        print(f"{amp} speed-up over fp32 (advimage): "
              f"{res['advimage'][0] / res[f'advimage --precision {amp}'][0]:.2f}x")


if __name__ == "__main__":
    main()
