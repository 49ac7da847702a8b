"""``advimage nim pretrain`` on digits: checkpoint written, resumed, bad input exits 2."""

from __future__ import annotations

import json

import pytest

from advimage.cli import main
from advimage.defend.nim.io import load_nim

TINY = ["--data", "digits", "--limit", "64", "--patch-size", "2", "--enc-dim", "32",
        "--enc-depth", "1", "--enc-heads", "2", "--dec-dim", "32", "--dec-depth", "1",
        "--dec-heads", "2", "--batch-size", "16", "--device", "cpu", "--threads", "1"]


def test_nim_pretrain_cli(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["nim", "pretrain", *TINY, "--epochs", "2", "--out", str(out)]) == 0
    assert "nim epoch 2: loss" in capsys.readouterr().out
    model = load_nim(out / "nim", image_size=(8, 8))
    assert model.config.patch_size == 2 and model.config.mode == "nim"
    # a longer schedule on the same folder is refused (settings differ), a one-line error
    assert main(["nim", "pretrain", *TINY, "--epochs", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other settings" in err[0]
    assert json.loads((out / "state.json").read_text())["epoch"] == 2


def test_nim_pretrain_cli_bad_patch(tmp_path, capsys) -> None:
    args = ["nim", "pretrain", *TINY, "--patch-size", "3", "--out", str(tmp_path / "r")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "divisible by patch_size 3" in err[0]


def test_eval_robust_cli_attacks_de3(tmp_path, capsys) -> None:
    """The ``nim`` defense through ``advimage eval robust`` on the bundled digits model."""
    import torch

    from advimage.data import load_dataset
    from advimage.defend.nim.defense import De3Defense
    from advimage.models.hub import load_model

    torch.set_num_threads(1)
    run = tmp_path / "run"
    assert main(["nim", "pretrain", *TINY, "--epochs", "2", "--out", str(run)]) == 0
    out = tmp_path / "r"
    rc = main(["eval", "robust", "--model", "bundled", "--data", "digits", "--limit", "40",
               "--attacks", "fgsm", "--eps", "0.1", "--defense", f"nim:{run}/nim,sigma_test=0",
               "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    row = json.loads((out / "robust.json").read_text())["results"][0]
    model, _ = load_model("bundled")
    x, y = load_dataset("digits", "test").balanced(40).tensors()
    defended = De3Defense(load_nim(run / "nim"), model, sigma_test=0.0)
    with torch.no_grad():
        acc = float((defended(x).argmax(1) == y).float().mean())
    assert row["clean_accuracy"] == pytest.approx(acc)
