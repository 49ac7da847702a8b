"""Data-parallel training under torchrun (``advimage.train.distributed``), gloo on 2 CPUs.

Two processes at global batch 64 take the optimizer steps one process takes at batch 64 (same
seeded order and augmentation, each process a half of every batch, DDP averaging the halves'
gradients), so the weights agree up to floating-point summation order. ``small-cnn`` has no
BatchNorm: under gloo BatchNorm uses each process's own half (see the module), which would
make this comparison approximate by design rather than by rounding.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import advimage
from advimage.errors import UserInputError
from advimage.train import TrainConfig, train

SRC = str(Path(advimage.__file__).resolve().parents[1])
CFG = dict(model="small-cnn", dataset="digits", epochs=3, batch_size=64, lr=0.05,
           train_limit=384, test_limit=64, seed=3)
TOL = 1e-5  # max |w_2proc - w_1proc|: float32 summation order over 18 SGD steps

_SCRIPT = """
import sys
import torch.nn.functional as F
import advimage.train.trainer as t
from advimage.train import TrainConfig, train
stop, hook = int(sys.argv[2]), sys.argv[3] == "hook"
if stop:  # simulate a crash right after epoch `stop`'s checkpoint
    run_epoch = t._run_epoch
    def crash(run, epoch, history):
        run_epoch(run, epoch, history)
        if epoch + 1 == stop:
            raise SystemExit(3)
    t._run_epoch = crash
def ce(model, x, y):  # a loss hook: the model is trained outside DDP, gradients averaged
    logits = model(x)
    return F.cross_entropy(logits, y), logits
train(TrainConfig(**{cfg!r}), sys.argv[1], device="cpu", progress=False,
      loss_hook=ce if hook else None)
"""


def _torchrun(out: Path, stop: int = 0, hook: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(29500 + os.getpid() % 1000), "--no-python",
           sys.executable, "-c", _SCRIPT.format(cfg=CFG), str(out), str(stop),
           "hook" if hook else "-"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model.safetensors"))


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("one")
    train(TrainConfig(**CFG), out, device="cpu", progress=False)
    return _weights(out)


def test_two_processes_match_one_and_an_interrupted_run_resumes(tmp_path,
                                                                 one_process) -> None:
    whole = _torchrun(tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]
    two = _weights(tmp_path / "whole")
    assert two.keys() == one_process.keys()
    diff = max(float((two[k] - one_process[k]).abs().max()) for k in two)
    print(f"max |w_2proc - w_1proc| = {diff:.2e}")
    assert diff < TOL, diff

    crashed = _torchrun(tmp_path / "resumed", stop=2)
    assert crashed.returncode != 0 and not (tmp_path / "resumed" / "model.safetensors").exists()
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # rank 0 alone logs: one line per epoch
    resumed = _torchrun(tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    again = _weights(tmp_path / "resumed")
    assert all(torch.equal(again[k], two[k]) for k in two)  # exact: same steps, same order
    assert len((tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()) == 3


def test_world_size_that_does_not_divide_the_batch_is_one_line(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(UserInputError, match="--batch-size 64 does not split evenly over 3 "
                                             "torchrun processes; use a multiple of 3"):
        train(TrainConfig(**CFG), tmp_path / "r", device="cpu", progress=False)
    assert not (tmp_path / "r").exists()


def test_a_loss_hook_run_averages_gradients_by_hand(tmp_path, one_process) -> None:
    res = _torchrun(tmp_path / "hook", hook=True)
    assert res.returncode == 0, res.stderr[-2000:]
    two = _weights(tmp_path / "hook")
    diff = max(float((two[k] - one_process[k]).abs().max()) for k in two)
    print(f"loss hook: max |w_2proc - w_1proc| = {diff:.2e}")
    assert diff < TOL, diff
