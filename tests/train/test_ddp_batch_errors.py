"""Under torchrun every training command refuses a global batch the world size does not divide
(one line, exit 2, nothing written: not even ``--track``'s folder), and only rank 0 tracks.

The processes are simulated by torchrun's environment (``WORLD_SIZE``, ``RANK``) in this
process: the check runs before the process group is joined. Two real processes are in
``tests/train/test_ddp.py`` and ``tests/studies/nim/test_nim_ddp.py``.
"""

from __future__ import annotations

import argparse

import pytest

from advimage.cli import main
from advimage.cli.track_options import tracking_for
from advimage.tracking import TensorBoardTracker, Tracker

_MESSAGE = ("advimage: error: --batch-size 64 does not split evenly over 3 torchrun processes; "
            "use a multiple of 3")


@pytest.mark.parametrize("argv", [
    ["train", "--quick", "--batch-size", "64"],
    ["distill", "--arm", "independent", "--quick", "--batch-size", "64"],
    ["nim", "pretrain", "--data", "digits", "--limit", "96", "--batch-size", "64"],
    ["nim", "finetune", "--nim", "no-such/nim", "--batch-size", "64"],
], ids=["train", "distill", "nim-pretrain", "nim-finetune"])
def test_a_batch_the_world_does_not_divide_is_one_line_before_any_file(
        argv, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    out = tmp_path / "run"
    assert main([*argv, "--track", "tensorboard", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [_MESSAGE]
    assert not out.exists()


@pytest.mark.parametrize("rank, tracked", [("0", True), ("1", False)])
def test_only_rank_zero_tracks(rank, tracked, tmp_path, monkeypatch) -> None:
    pytest.importorskip("tensorboard")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    with tracking_for(argparse.Namespace(track="tensorboard"), tmp_path, {"lr": 0.1}) as t:
        assert isinstance(t, TensorBoardTracker) is tracked and isinstance(t, Tracker)
    assert (tmp_path / "tensorboard").exists() is tracked
