"""``torchrun --nproc-per-node 2 -m advimage.cli nim pretrain`` (gloo, 2 CPUs) vs one process.

Every process draws the corruption of the whole global batch (same seeded generator) and trains on
its contiguous half, so each image gets exactly the noise (or mask) it gets in one process and
DDP's averaged gradient is the global batch's; the NIM autoencoder has LayerNorm only (no
BatchNorm, no dropout), so the two runs differ by float32 summation order alone. Rank 0 alone
writes the checkpoints, the final model, the TensorBoard events and the output line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import advimage
from advimage.cli import main
from advimage.defend.nim.model import NIMAutoencoder, NIMConfig
from advimage.studies.nim.train import _Objective

SRC = str(Path(advimage.__file__).resolve().parents[1])
TINY = ["--data", "digits", "--limit", "96", "--patch-size", "2", "--enc-dim", "32",
        "--enc-depth", "1", "--enc-heads", "2", "--dec-dim", "32", "--dec-depth", "1",
        "--dec-heads", "2", "--batch-size", "32", "--epochs", "3", "--lr", "2e-3",
        "--seed", "3", "--device", "cpu", "--threads", "1"]
TOL = 1e-6  # max |w_2proc - w_1proc| after 9 AdamW steps: float32 summation order (1.2e-7 seen)
# Attention key biases have a zero true gradient (a query adds the same q.b_k to every key's
# logit; softmax ignores it), so both runs step them by AdamW-normalized rounding noise, up to
# lr per step: compared only against that bound, not against each other.
KEY_BIAS_BOUND = 9 * 2e-3  # steps x lr

_SCRIPT = """
import sys
import advimage.studies.nim.train as t
from advimage.cli import main
stop, args = int(sys.argv[1]), sys.argv[2:]
if stop:  # rank 0 crashes right after writing epoch `stop`'s checkpoint
    save = t.save_train_state
    def crash(out, model, opt, meta, *rest):
        save(out, model, opt, meta, *rest)
        if meta["epoch"] == stop:
            raise SystemExit(3)
    t.save_train_state = crash
sys.exit(main(args))
"""


def _torchrun(args: list[str], stop: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "--no-python", sys.executable, "-c", _SCRIPT, str(stop), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def _pretrain(out: Path, *extra: str) -> list[str]:
    return ["nim", "pretrain", *TINY, *extra, "--out", str(out)]


def _diff(a: Path, b: Path) -> float:
    """Max |difference| of the weights, less the attention key biases (checked to the bound)."""
    wa, wb = load_file(str(a / "nim.safetensors")), load_file(str(b / "nim.safetensors"))
    assert wa.keys() == wb.keys()
    for k in [k for k in wa if k.endswith("attn.qkv.bias")]:  # (3 D,): query, key, value
        d = len(wa[k]) // 3
        keys = (wa[k][d:2 * d] - wb[k][d:2 * d]).abs().max()
        assert float(keys) <= KEY_BIAS_BOUND, (k, float(keys))
        wa[k], wb[k] = wa[k][torch.arange(3 * d) // d != 1], wb[k][torch.arange(3 * d) // d != 1]
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict[str, Path]:
    """Single-process NIM and MIM runs at the same global batch (32)."""
    runs = {}
    for mode in ("nim", "mim"):
        runs[mode] = tmp_path_factory.mktemp(mode)
        assert main(_pretrain(runs[mode], "--mode", mode)) == 0
    return runs


def test_two_processes_match_one_with_rank_zero_side_effects(tmp_path, one_process) -> None:
    pytest.importorskip("tensorboard")
    out = tmp_path / "two"
    res = _torchrun(_pretrain(out, "--track", "tensorboard"))
    assert res.returncode == 0, res.stderr[-3000:]
    diff = _diff(out, one_process["nim"])
    print(f"nim: max |w_2proc - w_1proc| = {diff:.2e}")
    assert diff < TOL, diff
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("nim epoch")]
    assert len(lines) == 1 and lines[0].endswith(f"-> {out}/nim.safetensors"), res.stdout
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1
    two = json.loads((out / "state.json").read_text())["history"]
    one = json.loads((one_process["nim"] / "state.json").read_text())["history"]
    assert [h["loss"] for h in two] == pytest.approx([h["loss"] for h in one], rel=1e-5)


def test_an_interrupted_two_process_run_resumes(tmp_path, one_process) -> None:
    out = tmp_path / "mim"
    crashed = _torchrun(_pretrain(out, "--mode", "mim"), stop=2)
    assert crashed.returncode != 0 and not (out / "nim.safetensors").exists()
    assert json.loads((out / "state.json").read_text())["epoch"] == 2
    resumed = _torchrun(_pretrain(out, "--mode", "mim"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    history = json.loads((out / "state.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]  # epochs 1-2 from before the crash
    diff = _diff(out, one_process["mim"])
    print(f"mim, resumed: max |w_2proc - w_1proc| = {diff:.2e}")
    assert diff < TOL, diff


@pytest.mark.parametrize("mode", ["nim", "mim"])
def test_the_shared_objective_is_forward_exactly(mode: str) -> None:
    """The draws and objective of the torchrun path, given a whole batch, compute
    ``NIMAutoencoder.forward``'s loss (one process's path) bit for bit."""
    cfg = NIMConfig(image_size=(8, 8), in_channels=1, patch_size=2, enc_dim=16, enc_depth=1,
                    enc_heads=2, dec_dim=16, dec_depth=1, dec_heads=2, mode=mode)
    torch.manual_seed(0)
    model, x = NIMAutoencoder(cfg), torch.rand(6, 1, 8, 8)
    torch.manual_seed(1)
    want, _ = model(x)
    torch.manual_seed(1)
    got = _Objective(model)(x, *model.draw_corruption(x))
    assert torch.equal(got, want)
