"""bench/quick.py turns each script's target line into one met / NOT met verdict."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from quick import verdicts  # noqa: E402


def test_each_target_line_becomes_one_verdict():
    out = "\n".join([
        "advimage/bare = 0.873 (target <= 1.05): met",
        "time ours / torchattacks = 0.511 (target <= 0.333): MISSED",
        "speed-up 4.3x (target >= 5x: NOT met)",
        "1000000 keys: speed-up 18.7x at agreement 1.000 (target >= 10x at >= 99%: met)",
        "CPU time: speed-up in CPU time 4.4x (wall time above is the target's measure)",
        "batched   : 256 images in 20.78 s = 12.32 images/s",
    ])
    got = verdicts("x", out)
    assert [v.split(" -- ")[0] for v in got] == ["x: met", "x: NOT met", "x: NOT met", "x: met"]
    assert got[2].endswith("speed-up 4.3x (target >= 5x: NOT met)")
