"""`advimage distill`: one quick KD run and clear errors."""

from __future__ import annotations

import json

from advimage.cli import main

QUICK = ["--quick", "--epochs", "1", "--train-limit", "128", "--test-limit", "64", "--no-progress"]


def test_distill_kd_quick(tmp_path, capsys) -> None:
    assert main(["distill", "--arm", "kd", "--tau", "2", "--out", str(tmp_path), *QUICK]) == 0
    assert "kd student: test accuracy" in capsys.readouterr().out
    meta = json.loads((tmp_path / "model.json").read_text())["distill"]
    assert (meta["arm"], meta["tau"], meta["alpha"]) == ("kd", 2.0, 0.9)
    assert len(meta["teacher_fingerprint"]) == 64


def test_distill_cli_errors(tmp_path, capsys) -> None:
    args = ["distill", "--arm", "fitnets", "--out", str(tmp_path / "a"), *QUICK]
    assert main([*args, "--hint-layers", "conv2"]) == 2
    assert "TEACHER_LAYER,STUDENT_LAYER" in capsys.readouterr().err
    assert main([*args, "--hint-layers", "conv2,fc1"]) == 2
    err = capsys.readouterr().err
    assert "(128,)" in err and "(64, 8, 8)" in err
    assert main(["distill", "--teacher", str(tmp_path / "none.safetensors"),
                 "--out", str(tmp_path / "b"), *QUICK]) == 2
    assert "not found" in capsys.readouterr().err
