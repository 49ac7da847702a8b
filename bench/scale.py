"""Robust-evaluation throughput: the serial runner vs the Ray executor with 1 and 2 workers.

Runs one ``advimage run`` config (the bundled digits model; PGD, FGSM, the unbounded check and
the gradient statistics on every batch) into fresh run directories, interleaving the contenders
round after round, and reports the median wall time of each. Ray's time is split into the
workers' start (actors importing torch and building the run once) and the batch phase; the
per-batch overhead is (Ray 1-worker batch phase - serial) / batches. Every run's stored rows are
checked against the serial run's (the executor changes where batches run, not what they give).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/scale.py --rounds 3

``--ddp`` instead times training (``advimage.train``; small-cnn on digits by default): one process
vs ``torchrun --nproc-per-node 2`` (DDP, gloo) at the same global batch, each in a fresh process,
interleaved; the time is ``train()``'s own (process start-up excluded).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from advimage.eval.config import parse_config
from advimage.eval.config_schema import ExecutorConfig
from advimage.eval.executor_ray import RayExecutor
from advimage.eval.runner import run_evaluation


def workload(images: int, batch: int, steps: int, device: str = "cpu") -> dict[str, Any]:
    return {
        "name": "scale", "seed": 0, "device": device, "model": "bundled", "examples": 0,
        "data": {"name": "digits", "split": "test", "limit": images, "batch_size": batch},
        "attacks": [{"name": "fgsm", "eps": [0.1]},
                    {"name": "pgd", "eps": [0.1], "options": {"steps": steps}}],
        "defenses": ["none", {"name": "gaussian-noise", "options": {"sigma": 0.05}}],
        "checks": {"unbounded_steps": steps},
    }


def rows(run: Path) -> list[tuple]:
    con = sqlite3.connect(str(run / "results.sqlite"))
    try:
        return con.execute("SELECT * FROM samples ORDER BY defense, attack, sample").fetchall()
    finally:
        con.close()


class TimedRay(RayExecutor):
    """The Ray executor, recording how long its workers took to start."""

    started_s = 0.0

    def start(self, spec: Any, device: str) -> None:
        t = time.perf_counter()
        super().start(spec, device)
        TimedRay.started_s = time.perf_counter() - t


def one(cfg: Any, root: Path, name: str, settings: ExecutorConfig) -> tuple[float, float, Path]:
    """(wall s, worker start s) of one run into a fresh directory."""
    import advimage.eval.runner as runner

    out = Path(tempfile.mkdtemp(dir=root)) / name
    runner.RayExecutor = TimedRay  # type: ignore[misc]
    TimedRay.started_s = 0.0
    t = time.perf_counter()
    run_evaluation(cfg, out, executor=settings)
    if cfg.device != "cpu":
        torch.cuda.synchronize()
    return time.perf_counter() - t, TimedRay.started_s, out


def contenders(a: argparse.Namespace) -> dict[str, ExecutorConfig]:
    """``serial`` and ``ray-N`` for each N of ``--workers`` (``ray-N-gpu G`` with --gpus)."""
    out = {"serial": ExecutorConfig()}
    for n in a.workers:
        gpus = None if a.gpus_per_worker is None else (
            a.gpus_per_worker if a.gpus_per_worker > 0 else 1.0 / n)  # 0: share one GPU
        out[f"ray-{n}"] = ExecutorConfig(name="ray", workers=n, gpus_per_worker=gpus)
    return out


_TRAIN = """
import sys, time, torch
from advimage.train import TrainConfig, train
torch.set_num_threads(1)
t = time.perf_counter()
train(TrainConfig(**{cfg!r}), sys.argv[1], device="cpu", progress=False)
if int(__import__("os").environ.get("RANK", "0")) == 0:
    print(f"TRAIN_S {{time.perf_counter() - t:.3f}}")
"""


def ddp(a: argparse.Namespace) -> None:
    """1-process vs 2-process (torchrun, gloo) training time at the same global batch."""
    cfg = {"model": a.ddp_model, "dataset": a.ddp_dataset, "epochs": 2, "batch_size": 128,
           "lr": 0.05, "train_limit": a.images * 3, "test_limit": 64, "seed": 0}
    script = _TRAIN.format(cfg=cfg)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmds = {"1 process": [sys.executable, "-c", script],
            "2 processes (torchrun)": [sys.executable, "-m", "torch.distributed.run",
                                       "--nproc-per-node", "2", "--no-python", sys.executable,
                                       "-c", script]}
    times: dict[str, list[float]] = {k: [] for k in cmds}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for k, cmd in cmds.items():
                out = Path(tmp) / f"{r}-{len(cmd)}"
                res = subprocess.run([*cmd, str(out)], env=env, capture_output=True, text=True,
                                     check=True)
                times[k].append(float(res.stdout.split("TRAIN_S")[-1].split()[0]))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"training: {cfg}; median of {a.rounds} interleaved rounds\n")
    print("| training | s | images/s |\n|---|---:|---:|")
    for k, v in med.items():
        print(f"| {k} | {v:.1f} | {cfg['train_limit'] * cfg['epochs'] / v:.0f} |")
    one, two = med.values()
    print(f"\n2 processes / 1 process: {one / two:.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=360)
    p.add_argument("--batch", type=int, default=30)
    p.add_argument("--steps", type=int, default=20, help="PGD and unbounded-check steps")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=lambda t: [int(n) for n in t.split(",")], default=[1, 2],
                   help="Ray worker counts to time, e.g. 1,2")
    p.add_argument("--gpus-per-worker", type=float, default=None,
                   help="GPUs per Ray worker; 0: the workers share one GPU (1/N each)")
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    p.add_argument("--ddp", action="store_true", help="time DDP training instead (see above)")
    p.add_argument("--ddp-model", default="small-cnn")
    p.add_argument("--ddp-dataset", default="digits")
    a = p.parse_args()
    if a.ddp:
        ddp(a)
        return
    import ray

    torch.set_num_threads(1)
    ray.init(num_cpus=a.cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1",
                                       "PYTHONPATH": os.environ.get("PYTHONPATH", "")}})
    cfg = parse_config(workload(a.images, a.batch, a.steps, a.device))
    n_batches = -(-a.images // a.batch)
    runs = contenders(a)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
    with tempfile.TemporaryDirectory() as tmp:
        ref = None
        for _ in range(a.rounds):
            for name, settings in runs.items():
                wall, start, out = one(cfg, Path(tmp), name, settings)
                times[name].append((wall, start))
                ref = ref or rows(out)
                if rows(out) != ref:
                    sys.exit(f"{name}: stored rows differ from the serial run's")
    ray.shutdown()
    report(a, n_batches, times)


def report(a: argparse.Namespace, n_batches: int,
           times: dict[str, list[tuple[float, float]]]) -> None:
    med = {k: (statistics.median(w for w, _ in v), statistics.median(s for _, s in v))
           for k, v in times.items()}
    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}  machine: "
          f"{platform.node()} ({platform.machine()}, {os.cpu_count()} logical CPUs)  python "
          f"{platform.python_version()}  torch {torch.__version__}  "
          f"ray {__import__('ray').__version__}")
    print(f"workload: {a.images} digits in {n_batches} batches of {a.batch}; FGSM, PGD-{a.steps}"
          f", unbounded PGD-{a.steps}, gradients; defenses none + gaussian-noise; "
          f"median of {a.rounds} interleaved rounds")
    print("\n| executor | wall s | worker start s | batch phase s | images/s (batch phase) |")
    print("|---|---:|---:|---:|---:|")
    phase = {k: w - s for k, (w, s) in med.items()}
    for k, (w, s) in med.items():
        print(f"| {k} | {w:.1f} | {s:.1f} | {phase[k]:.1f} | {a.images / phase[k]:.1f} |")
    if "ray-1" in phase:
        overhead = (phase["ray-1"] - phase["serial"]) / n_batches * 1000
        print(f"\nray-1 / serial (batch phase): {phase['serial'] / phase['ray-1']:.2f}x  "
              f"(end to end {med['serial'][0] / med['ray-1'][0]:.2f}x; target >= 0.9x)")
        print(f"Ray per-batch overhead: {overhead:.0f} ms")
        for k in phase:
            if k.startswith("ray-") and k != "ray-1":
                print(f"{k} / ray-1 (batch phase): {phase['ray-1'] / phase[k]:.2f}x  (end to "
                      f"end {med['ray-1'][0] / med[k][0]:.2f}x; target for ray-2 >= 1.7x)")


if __name__ == "__main__":
    main()
