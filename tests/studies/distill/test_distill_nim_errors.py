"""``distill`` and ``nim pretrain|finetune`` refuse bad numbers, name damaged checkpoints and stop
on divergence: each a one-line error with exit status 2 through ``advimage.cli.main``."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from advimage.cli import main
from advimage.defend.nim.io import load_nim
from advimage.errors import CorruptFileError, TrainingDivergedError, UserInputError
from advimage.studies.distill import DistillConfig
from advimage.studies.nim.train import pretrain
from cli_helpers import error_message

QUICK = ["--quick", "--epochs", "1", "--train-limit", "128", "--test-limit", "64", "--no-progress",
         "--threads", "1"]
TINY = ["--data", "digits", "--limit", "64", "--patch-size", "2", "--enc-dim", "32",
        "--enc-depth", "1", "--enc-heads", "2", "--dec-dim", "32", "--dec-depth", "1",
        "--dec-heads", "2", "--batch-size", "16", "--device", "cpu", "--threads", "1"]




@pytest.mark.parametrize(
    "option, value, needle",
    [
        ("--alpha", "1.5", r"alpha \(--alpha\) must be a finite number in \[0, 1\]; got 1.5"),
        ("--alpha", "-0.1", r"alpha \(--alpha\) must be a finite number in \[0, 1\]; got -0.1"),
        ("--tau", "0", r"tau \(--tau\) must be a finite number > 0; got 0"),
        ("--tau", "inf", r"tau \(--tau\) must be a finite number > 0; got inf"),
        ("--beta", "nan", r"beta \(--beta\) must be a finite number >= 0; got nan"),
        ("--gamma", "-1", r"gamma \(--gamma\) must be a finite number >= 0; got -1"),
        ("--label-smoothing", "2", r"label_smoothing \(--label-smoothing\) .* got 2"),
    ],
)
def test_distill_refuses_bad_numbers(option, value, needle, tmp_path, capsys) -> None:
    argv = ["distill", "--arm", "kd", *QUICK, f"{option}={value}", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert re.fullmatch(needle, error_message(capsys))
    assert not (tmp_path / "r" / "state.json").exists()


def test_distill_config_refuses_in_the_library() -> None:
    for bad in (dict(alpha=2.0), dict(alpha=float("nan")), dict(tau=-1.0), dict(beta=-1.0)):
        with pytest.raises(UserInputError):
            DistillConfig(**bad)
    assert DistillConfig(alpha=1.0).alpha == 1.0 and DistillConfig(alpha=0).alpha == 0.0


def test_distill_divergence_keeps_the_last_good_state(tmp_path, capsys) -> None:
    out = tmp_path / "r"
    argv = ["distill", "--arm", "kd", *QUICK, "--epochs", "3", "--lr", "1e6", "--out", str(out)]
    assert main(argv) == 2
    msg = error_message(capsys)
    match = re.fullmatch(r"training diverged at epoch (\d) \(loss (nan|inf)\); (.*); lower --lr",
                         msg)
    assert match, msg
    epoch = int(match.group(1))
    if epoch == 1:
        assert match.group(3) == f"no epoch of this run had finished, so {out} holds no " \
                                  "checkpoint of it"
        assert not (out / "state.safetensors").exists()
    else:
        assert match.group(3) == f"the last good checkpoint (epoch {epoch - 1}) is kept in {out}"
        assert json.loads((out / "state.json").read_text())["epoch"] == epoch - 1
    assert not (out / "model.safetensors").exists()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--lr", "0"], r"lr \(--lr\) must be a finite number > 0; got 0"),
        (["--epochs", "0"], r"epochs \(--epochs\) must be an integer >= 1, got 0"),
        (["--batch-size", "0"], r"batch_size \(--batch-size\) must be an integer >= 1, got 0"),
        (["--lr", "1e6"], r"training diverged at epoch 1 \(loss nan\); no epoch of this run had "
                          r"finished, so .* holds no checkpoint of it; lower --lr"),
    ],
)
def test_nim_pretrain_refuses_bad_numbers_and_divergence(argv, needle, tmp_path, capsys) -> None:
    out = tmp_path / "r"
    assert main(["nim", "pretrain", *TINY, "--epochs", "1", *argv, "--out", str(out)]) == 2
    msg = error_message(capsys)
    assert re.fullmatch(needle, msg), msg
    assert not (out / "state.safetensors").exists()


def test_nim_pretrain_library_divergence_keeps_last_good_state(tmp_path, monkeypatch) -> None:
    from advimage.defend.nim.model import NIMAutoencoder, NIMConfig

    torch.manual_seed(0)
    images = torch.rand(32, 1, 8, 8)
    cfg = NIMConfig(image_size=(8, 8), in_channels=1, patch_size=2, enc_dim=16, enc_depth=1,
                    enc_heads=2, dec_dim=16, dec_depth=1, dec_heads=2)
    calls = {"n": 0}
    forward = NIMAutoencoder.forward

    def poisoned(self, x):  # noqa: ANN001, ANN202
        calls["n"] += 1
        loss, out = forward(self, x)
        return (loss * float("nan") if calls["n"] == 3 else loss), out

    monkeypatch.setattr(NIMAutoencoder, "forward", poisoned)
    kept = r"^training diverged at epoch 2 \(loss nan\); the last good checkpoint \(epoch 1\) "
    with pytest.raises(TrainingDivergedError, match=kept):
        pretrain(cfg, images, tmp_path, epochs=3, batch_size=16, device="cpu")
    assert json.loads((tmp_path / "state.json").read_text())["epoch"] == 1
    (tmp_path / "state.json").write_text("{")
    with pytest.raises(CorruptFileError, match=r"state.json is damaged .*--no-resume$"):
        pretrain(cfg, images, tmp_path, epochs=3, batch_size=16, device="cpu")


@pytest.fixture(scope="module")
def nim_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("nim") / "run"
    assert main(["nim", "pretrain", *TINY, "--epochs", "1", "--out", str(run)]) == 0
    return run


def _finetune(nim: Path, out: Path) -> list[str]:
    return ["nim", "finetune", "--nim", str(nim), "--epochs", "1", "--batch-size", "32",
            "--train-limit", "64", "--test-limit", "20", "--sigma-test", "-1", "--no-progress",
            "--threads", "1", "--out", str(out)]


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda w: w.write_bytes(w.read_bytes()[:64]),
         r"{w} is not a readable safetensors file \(.*\)"),
        (lambda w: torch.save({"x": torch.zeros(1)}, w),
         r"{w} is a pickle \(torch.save\) file, not safetensors: refused because loading a pickle "
         r"could run code"),
        (lambda w: w.with_suffix(".json").write_text("{"),
         r"sidecar {s} is not valid JSON: .*"),
        (lambda w: w.with_suffix(".json").write_text('{"kind": "nim-autoencoder", "config": 3}'),
         r"sidecar {s} holds no valid NIM config \(.*\)"),
    ],
)
def test_nim_finetune_names_a_damaged_checkpoint(damage, needle, nim_run, tmp_path,
                                                 capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(nim_run, run)
    weights = run / "nim.safetensors"
    damage(weights)
    assert main(_finetune(run / "nim", tmp_path / "ft")) == 2
    pattern = needle.format(w=re.escape(str(weights)), s=re.escape(str(weights.with_suffix(
        ".json"))))
    assert re.fullmatch(pattern, error_message(capsys))
    with pytest.raises(CorruptFileError):
        load_nim(run / "nim")


def test_nim_finetune_given_the_run_directory(nim_run, tmp_path, capsys) -> None:
    assert main(_finetune(nim_run, tmp_path / "ft")) == 2
    assert error_message(capsys) == (f"{nim_run} is a directory, but a NIM checkpoint is "
                                     f"expected; did you mean {nim_run / 'nim'}?")
    assert main(_finetune(nim_run / "nim", tmp_path / "ft")) == 0
    assert main([*_finetune(nim_run / "nim", tmp_path / "ft2"), "--label-smoothing=1"]) == 2
    assert "label_smoothing (--label-smoothing)" in error_message(capsys)
