"""Out of memory is one line naming the batch size; the run config's ``precision`` key.

OOM is simulated by a Conv2d forward that raises what PyTorch raises (``torch.cuda.
OutOfMemoryError`` exists on CPU builds too; the CPU allocator raises a RuntimeError).
"""

from __future__ import annotations

import json

import pytest
import torch
from harness_helpers import tiny_config

from advimage.cli import main
from advimage.errors import EnvironmentFailureError
from advimage.eval.config import parse_config
from advimage.eval.runner import run_evaluation
from advimage.oom import is_out_of_memory, oom_guard
from cli_helpers import error_message

CPU_OOM = ("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
           "memory: you tried to allocate 9663676416 bytes. Error code 12")


@pytest.fixture
def conv_oom(monkeypatch):
    """Every Conv2d forward runs out of memory."""
    def boom(self, x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\n"
                                          "(GPU 0; 139 GiB total capacity; many details)")

    monkeypatch.setattr(torch.nn.Conv2d, "forward", boom)


def test_guard_classifies() -> None:
    assert is_out_of_memory(RuntimeError(CPU_OOM))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    with pytest.raises(RuntimeError, match="shapes"), oom_guard(4):
        raise RuntimeError("shapes cannot be multiplied")  # not OOM: passes through as is
    with pytest.raises(EnvironmentFailureError) as info, oom_guard(64, "data.batch_size"):
        raise RuntimeError(CPU_OOM)
    assert str(info.value) == "out of memory at batch size 64; lower data.batch_size"
    assert info.value.exit_code == 1


def test_runner_oom_names_batch_size(tmp_path, conv_oom) -> None:
    cfg = parse_config(tiny_config())
    with pytest.raises(EnvironmentFailureError) as info:
        run_evaluation(cfg, tmp_path / "run")
    assert str(info.value) == ("out of memory at batch size 10; lower --batch-size "
                               "(or data.batch_size)")


@pytest.mark.parametrize("command", [
    ["attack", "--out", "{tmp}/a"],
    ["models", "eval"],
    ["eval", "robust", "--attacks", "fgsm"],
])
def test_cli_oom_is_one_line(command, tmp_path, conv_oom, capsys) -> None:
    args = [c.replace("{tmp}", str(tmp_path)) for c in command]
    rc = main([*args, "--model", "bundled", "--data", "digits", "--limit", "12",
               "--batch-size", "6", "--device", "cpu", "--no-progress"])
    assert rc == 1
    msg = error_message(capsys)
    assert msg.startswith("out of memory at batch size 6; lower --batch-size"), msg


def test_config_precision_key(tmp_path) -> None:
    assert parse_config(tiny_config()).precision == "fp32"
    assert "precision" not in parse_config(tiny_config()).to_dict()  # old run folders resume
    cfg = parse_config(tiny_config(precision="BF16"))
    assert cfg.precision == "bf16" and cfg.to_dict()["precision"] == "bf16"
    assert parse_config(cfg.to_dict()).precision == "bf16"
    with pytest.raises(ValueError, match="config: 'precision' must be one of fp32, bf16, fp16"):
        parse_config(tiny_config(precision="fp8"))
    with pytest.raises(ValueError, match="'precision' must be string"):
        parse_config(tiny_config(precision=16))


def test_run_fp16_on_cpu_refused_before_work(tmp_path, write_config, capsys) -> None:
    cfg = write_config(tiny_config(precision="fp16"))
    rc = main(["run", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc == 2
    assert error_message(capsys).startswith("precision fp16 needs a CUDA device (got cpu)")
    assert not (tmp_path / "run").exists()


def test_run_bf16_records_precision(tmp_path) -> None:
    cfg = parse_config(tiny_config(precision="bf16", attacks=[{"name": "fgsm", "eps": [0.1]}]))
    run = run_evaluation(cfg, tmp_path / "run")
    stored = json.loads((run / "config.json").read_text())
    assert stored["precision"] == "bf16"
