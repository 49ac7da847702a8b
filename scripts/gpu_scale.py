"""GPU variant of ``bench/scale.py``: the serial runner vs Ray workers on CUDA.

Two timings, each a separate ``bench/scale.py`` process (one local Ray instance each):

1. workers sharing one GPU: Ray with 1 and 2 workers at 1/N of the GPU each (fractional GPUs);
2. one worker per GPU, when the machine has more than one.

Each writes its Markdown table to ``OUT/scale-*.md``. ``--smoke`` runs a tiny CPU version (to
check the script without a GPU).

    PYTHONPATH=src python scripts/gpu_scale.py --out gpu-out
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def bench(out: Path, name: str, args: list[str], timeout: float) -> int:
    """Run ``bench/scale.py ARGS`` into ``OUT/scale-NAME.md``; its exit status."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "bench" / "scale.py"), *args]
    with open(out / f"scale-{name}.md", "w", encoding="utf-8") as fh:
        fh.write(f"command: {' '.join(cmd)}\n\n")
        fh.flush()
        try:
            return subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                  timeout=timeout, check=False).returncode
        except subprocess.TimeoutExpired:
            fh.write(f"\ntimed out after {timeout:.0f} s\n")
            return 124


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--budget", type=float, default=400, help="seconds for the whole script")
    ap.add_argument("--smoke", action="store_true", help="tiny CPU run, no GPU needed")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    cpus = str(os.cpu_count() or 2)
    if a.smoke:
        return bench(a.out, "smoke", ["--images", "40", "--batch", "20", "--steps", "2",
                                      "--rounds", "1", "--workers", "1"], a.budget)
    gpus = torch.cuda.device_count()
    if gpus == 0:
        sys.stderr.write("no CUDA device; use --smoke\n")
        return 2
    work = ["--device", "cuda", "--images", "360", "--batch", "120", "--steps", "100",
            "--rounds", "2", "--cpus", cpus]
    rc = bench(a.out, "shared-gpu", [*work, "--workers", "1,2", "--gpus-per-worker", "0"],
               a.budget * (0.6 if gpus > 1 else 1.0))
    if gpus > 1:
        rc |= bench(a.out, "gpu-each", [*work, "--workers", str(gpus), "--gpus-per-worker",
                                        "1"], a.budget * 0.4)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
