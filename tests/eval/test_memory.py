"""Evaluation streams batches: peak memory does not grow with the dataset size.

Measured in a fresh process (peak RSS, ``ru_maxrss``) on a lazily generated dataset of
3x32x32 images: after a warm-up run, a run over 10x as many images must not raise the peak by
more than a small fraction of what holding those images would take.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

N_SMALL = 1_000
SCRIPT = textwrap.dedent(f"""
    import resource, sys
    import numpy as np
    import torch
    from torch import nn
    torch.set_num_threads(1)
    from advimage.data.base import ImageDataset
    from advimage.eval.config import parse_config
    from advimage.eval.runner import run_evaluation

    def lazy(n):  # images generated per batch from their indices: nothing held in memory
        def load(idx):
            g = torch.Generator().manual_seed(int(idx[0]))
            return torch.rand((len(idx), 3, 32, 32), generator=g)  # (B, 3, 32, 32)
        return ImageDataset("lazy", "test", [str(k) for k in range(10)], np.arange(n) % 10,
                            (3, 32, 32), load)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    cfg = parse_config({{"name": "mem", "model": "bundled", "device": "cpu", "examples": 0,
                        "data": {{"batch_size": 250}}, "checks": {{"unbounded": False}},
                        "attacks": [{{"name": "fgsm", "eps": 0.03}}], "detectors": ["msp"]}})
    out = sys.argv[1]
    peaks = []
    for i, n in enumerate(({N_SMALL}, {N_SMALL}, {10 * N_SMALL})):
        run_evaluation(cfg, f"{{out}}/run{{i}}", model=model, dataset=lazy(n))
        peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB
    print(*peaks)
""")


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_dataset_size(tmp_path) -> None:
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True,
                         text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    warm, small, large = (int(v) for v in res.stdout.split())
    growth_mib = (large - small) / 1024
    held_mib = 10 * N_SMALL * 3 * 32 * 32 * 4 / 2**20  # the 10x set as float32: ~117 MiB
    assert growth_mib < 0.15 * held_mib, (warm, small, large)
    # every sample of the large run was stored (the rows went to disk, not to memory)
    import sqlite3

    con = sqlite3.connect(str(tmp_path / "run2" / "results.sqlite"))
    assert con.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 10 * N_SMALL
    con.close()
