"""``make bench-quick``: every benchmark at a small size, one verdict line per target.

Runs each script of ``bench/`` as a subprocess with small arguments, keeps its full output in
``--log-dir`` and prints, per target the script checks, ``met`` or ``NOT met`` with the
figure (the script's own line naming the target). Timings on a shared machine are noisy and
the small sizes are not the sizes the targets are defined at (``bench/README.md`` records
the full runs), so this is a tripwire before a commit, not a pass/fail gate: it is not part
of CI and always exits 0 unless a script crashed.

    python bench/quick.py [--threads 2] [--only detect,cache] [--log-dir runs/bench-quick]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent

# name -> (script, small arguments, what the small size is)
RUNS: dict[str, tuple[str, list[str], str]] = {
    "attack_speed": ("attack_speed.py", ["--quick"], "batch 64, 2 repeats"),
    "attack_agreement": ("attack_agreement.py", ["--quick", "--dataset", "mnist"],
                         "100 MNIST points, small budgets"),
    "autoattack_speed": ("autoattack_speed.py", ["--n", "100"],
                         "100 MNIST points, vs the original (pyautoattack)"),
    "imagenet_speed": ("imagenet_speed.py", ["--batch-size", "8", "--repeats", "1"],
                       "batch 8, 1 repeat"),
    "cpu_allocator": ("cpu_allocator.py", ["--repeats", "3"], "3 repeats"),
    "detect_speed": ("detect_speed.py", ["--n", "64", "--ref-n", "16"],
                     "64 images, reference on 16 (target set at 256 / 64)"),
    "cache_speed": ("cache_speed.py", ["--sizes", "1000000", "--repeats", "2"],
                    "1M keys, 2 repeats (at 200k keys the exact lookup is too fast to need "
                    "FAISS, so the target's size is the only honest one: about 40 s)"),
}

# a line that names a target: "... (target >= 5x: met)", "... (target <= 1.05): MISSED", ...
TARGET = re.compile(r"target", re.IGNORECASE)
BAD = re.compile(r"NOT met|MISSED|not met|FAIL", re.IGNORECASE)


def verdicts(name: str, out: str) -> list[str]:
    """One ``name: met|NOT met -- <line>`` per target line of a script's output."""
    lines = []
    for line in out.splitlines():
        if TARGET.search(line) and re.search(r"\bmet\b|MISSED|ok\b|FAIL", line, re.IGNORECASE):
            state = "NOT met" if BAD.search(line) else "met"
            lines.append(f"{name}: {state} -- {line.strip()}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="passed to every script")
    p.add_argument("--only", default=None, help="comma-separated names from: " + ", ".join(RUNS))
    p.add_argument("--log-dir", type=Path, default=Path("runs/bench-quick"))
    args = p.parse_args()
    names = args.only.split(",") if args.only else list(RUNS)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    crashed = 0
    summary = []
    for name in names:
        script, extra, size = RUNS[name]
        cmd = [sys.executable, str(BENCH / script), *extra]
        if args.threads and name != "cpu_allocator":
            cmd += ["--threads", str(args.threads)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        out = proc.stdout + proc.stderr
        (args.log_dir / f"{name}.log").write_text(" ".join(cmd) + "\n" + out)
        found = verdicts(name, out) if proc.returncode == 0 else []
        if proc.returncode != 0:
            crashed += 1
            last = out.strip().splitlines()[-1] if out.strip() else ""
            found = [f"{name}: CRASHED (exit {proc.returncode}) -- {last}"]
        elif not found:
            found = [f"{name}: ran, no target line in its output"]
        summary += [f"{v}  [{size}, {wall:.0f} s]" for v in found]
        for v in found:
            print(f"{v}  [{size}, {wall:.0f} s]", flush=True)
    print(f"# bench-quick: {len(summary)} verdict lines, {crashed} crashed; logs in {args.log_dir}")
    sys.exit(1 if crashed else 0)


if __name__ == "__main__":
    main()
