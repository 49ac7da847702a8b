"""Shared pieces of the benchmark scripts: data, models, peers, timing and the report header.

The scripts compare advimage's attacks with torchattacks, Foolbox and ART (``make peers``) on
the reference models beside the checkout (``../shared``, or ``$ADVIMAGE_SHARED``, or
``--shared``). The peer adapters live in ``tests/attacks/peers.py`` so the differential tests
and the benchmarks run the peers in exactly the same way; this module puts that folder on
``sys.path``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "attacks"))

import peers  # noqa: E402  (tests/attacks/peers.py)

from advimage.data import load_dataset  # noqa: E402
from advimage.models import import_reference  # noqa: E402

__all__ = [
    "REPO",
    "add_common_args",
    "bare_pgd",
    "freeze",
    "header",
    "load_cifar",
    "load_mnist",
    "median_time",
    "peers",
    "robust_pct",
]


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shared", type=Path,
                        default=Path(os.environ.get("ADVIMAGE_SHARED", REPO.parent / "shared")),
                        help="folder with data/ and models/ (default ../shared)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice = the machine's cores)")


def setup_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


def header(title: str) -> str:
    """Date, machine and torch settings, printed on top of every report."""
    cpu = platform.processor() or platform.machine()
    return (
        f"# {title}\n"
        f"date: {datetime.datetime.now().isoformat(timespec='seconds')}  "
        f"machine: {platform.node()} ({cpu}, {os.cpu_count()} logical CPUs)  "
        f"python {platform.python_version()}  torch {torch.__version__}  "
        f"threads {torch.get_num_threads()}"
    )


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode, parameters without grad: every contender gets the same model state."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_cifar(shared: Path, n: int) -> tuple[nn.Module, Tensor, Tensor]:
    """ResNet-20 and ``n`` class-balanced CIFAR-10 test images (every (10000 // n)-th image
    of the class-sorted split, i.e. n / 10 per class)."""
    model = import_reference(sorted((shared / "models").glob("resnet20-*.th"))[0])
    ds = load_dataset("cifar10", "test", data_root=shared / "data" / "cifar10")
    x, y = ds.subset(range(0, len(ds), len(ds) // n)[:n]).tensors()
    return freeze(model), x, y


def load_mnist(shared: Path, n: int) -> tuple[nn.Module, Tensor, Tensor]:
    """Adversarially trained LeNet5 (advertorch) and the first ``n`` MNIST test images."""
    model = import_reference(shared / "models" / "mnist_lenet5_advtrained.pt")
    ds = load_dataset("mnist", "test", data_root=shared / "data" / "mnist" / "raw")
    x, y = ds.tensors(limit=n)
    return freeze(model), x, y


def robust_pct(model: nn.Module, x_adv: Tensor, y: Tensor) -> float:
    """Robust accuracy (%) at ``x_adv``, the same evaluation for every library."""
    return 100.0 * peers.robust_mask(model, x_adv, y).float().mean().item()


def bare_pgd(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int
) -> Tensor:
    """The hand-written baseline: linf PGD from ``x``, per-sample CE summed, no extras."""
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = nn.functional.cross_entropy(model(x_adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)
    return x_adv


def sync_device() -> None:
    """Wait for queued CUDA work (no-op on the CPU), so a timer measures work, not its launch.

    Without it a contender that never synchronizes (the bare loop) returns with kernels still
    queued, and the next contender's first synchronization pays for them.
    """
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def median_time(fn: Callable[[], Tensor], repeats: int, warmup: int = 1) -> tuple[float, Tensor]:
    """Median wall time (s) of ``fn()`` over ``repeats`` runs after ``warmup`` runs; last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        sync_device()
        start = time.perf_counter()
        out = fn()
        sync_device()
        times.append(time.perf_counter() - start)
    assert out is not None
    return statistics.median(times), out


def timed(fn: Callable[[], Tensor]) -> tuple[float, Tensor]:
    """One run: (wall seconds, result)."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out
