"""Training refuses bad recipes, stops on divergence keeping the last good checkpoint, and names
a damaged resume state: each a one-line error with exit status 2 through ``advimage.cli.main``."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from advimage.cli import main
from advimage.errors import CorruptFileError, TrainingDivergedError, UserInputError
from advimage.train import PRESETS, TrainConfig, train
from cli_helpers import error_message

SMALL = ["--quick", "--epochs", "2", "--train-limit", "128", "--test-limit", "64",
         "--no-progress", "--threads", "1"]
CFG = dict(model="small-cnn", dataset="digits", epochs=3, batch_size=64, lr=0.05,
           train_limit=128, test_limit=64, seed=1)




@pytest.mark.parametrize(
    "option, value, needle",
    [
        ("--label-smoothing", "2", r"label_smoothing \(--label-smoothing\) must be a finite number "
                                   r"in \[0, 1\); got 2"),
        ("--label-smoothing", "-0.1", r"in \[0, 1\); got -0.1"),
        ("--weight-decay", "-1e-4", r"weight_decay \(--weight-decay\) must be a finite number "
                                    r">= 0; got -0.0001"),
        ("--momentum", "1", r"momentum \(--momentum\) must be a finite number in \[0, 1\); got 1"),
        ("--momentum", "-0.5", r"momentum .* got -0.5"),
        ("--warmup-epochs", "3", r"warmup_epochs .* in \[0, 2\], not longer than the 2 training"),
        ("--warmup-epochs", "-1", r"warmup_epochs .* got -1"),
        ("--lr", "0", r"lr \(--lr\) must be a finite number > 0; got 0"),
        ("--lr", "-0.1", r"lr \(--lr\) must be a finite number > 0"),
        ("--lr", "nan", r"lr \(--lr\) .* got nan"),
        ("--lr", "inf", r"lr \(--lr\) .* got inf"),
        ("--epochs", "0", r"epochs \(--epochs\) must be an integer >= 1, got 0"),
        ("--batch-size", "0", r"batch_size \(--batch-size\) must be an integer >= 1"),
        ("--preset", "foo", r"unknown preset 'foo' \(--preset\); choose one of: "
                            r"cifar10-resnet20-cpu, cifar10-resnet20-full, digits, quick"),
    ],
)
def test_cli_refuses_bad_recipe(option, value, needle, tmp_path, capsys) -> None:
    argv = ["train", *SMALL, f"{option}={value}", "--out", str(tmp_path / "run")]
    if option == "--preset":
        argv.remove("--quick")
    assert main(argv) == 2
    msg = error_message(capsys)
    assert re.search(needle, msg), msg
    assert not (tmp_path / "run" / "state.json").exists()  # refused before any work


@pytest.mark.parametrize(
    "bad",
    [dict(label_smoothing=1.0), dict(weight_decay=-1.0), dict(momentum=1.0), dict(momentum=-0.1),
     dict(warmup_epochs=3.5), dict(lr=float("inf")), dict(epochs=2.5), dict(epochs=True),
     dict(adv_eps=float("nan"))],
)
def test_library_refuses_bad_recipe(bad) -> None:
    with pytest.raises(UserInputError):
        TrainConfig(**{**CFG, **bad})


def test_edges_of_the_ranges_are_accepted() -> None:
    TrainConfig(**{**CFG, "label_smoothing": 0.0, "momentum": 0.0, "weight_decay": 0.0,
                   "warmup_epochs": 3})  # a warm-up as long as training: the default 1 of 1
    TrainConfig(**{**CFG, "epochs": 1})  # the default one-epoch warm-up with one epoch
    TrainConfig(**{**CFG, "label_smoothing": 0.999, "momentum": 0.999})


def test_unknown_preset_is_a_key_error_listing_the_presets() -> None:
    with pytest.raises(KeyError) as err:
        PRESETS["foo"]
    assert str(err.value) == ("unknown preset 'foo' (--preset); choose one of: "
                              "cifar10-resnet20-cpu, cifar10-resnet20-full, digits, quick")
    assert isinstance(err.value, UserInputError) and PRESETS.get("foo") is None


def _diverging_hook(at_call: int, mode: str):
    """A loss hook that trains normally, then at call ``at_call`` returns a NaN loss ("loss")
    or a finite loss whose gradients are NaN ("weights")."""
    calls = {"n": 0}

    def hook(model, x, y):  # noqa: ANN001, ANN202
        calls["n"] += 1
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if calls["n"] == at_call:
            if mode == "loss":
                return loss * float("nan"), logits
            for p in model.parameters():
                p.register_hook(lambda g: torch.full_like(g, float("nan")))
        return loss, logits

    return hook


@pytest.mark.parametrize("mode, reason", [("loss", "loss nan"), ("weights", "non-finite weights")])
def test_divergence_keeps_the_last_good_checkpoint(mode, reason, tmp_path) -> None:
    cfg = TrainConfig(**CFG)  # 2 steps per epoch: call 4 is epoch 2's last step
    with pytest.raises(TrainingDivergedError) as err:
        train(cfg, tmp_path, device="cpu", progress=False, loss_hook=_diverging_hook(4, mode))
    assert str(err.value) == (f"training diverged at epoch 2 ({reason}); the last good "
                              f"checkpoint (epoch 1) is kept in {tmp_path}; lower --lr")
    assert json.loads((tmp_path / "state.json").read_text())["epoch"] == 1
    state = load_file(str(tmp_path / "state.safetensors"))
    assert all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point())
    assert not (tmp_path / "model.safetensors").exists()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
    # the kept state resumes to exactly the weights of an undisturbed run
    model, _ = train(cfg, tmp_path, device="cpu", progress=False,
                     loss_hook=_diverging_hook(0, mode))
    clean, _ = train(cfg, tmp_path / "clean", device="cpu", progress=False,
                     loss_hook=_diverging_hook(0, mode))
    for (k, a), b in zip(model.state_dict().items(), clean.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("schedule", [["--lr", "1e6"],
                                      ["--epochs", "3", "--warmup-epochs", "3", "--lr", "1e4"]])
def test_cli_huge_lr_says_where_it_diverged(schedule, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", *SMALL, *schedule, "--out", str(out)]) == 2
    msg = error_message(capsys)
    match = re.fullmatch(r"training diverged at epoch (\d+) \(loss (nan|inf|-inf)\); (.*); "
                         r"lower --lr", msg)
    assert match, msg
    epoch = int(match.group(1))
    if epoch == 1:
        assert match.group(3) == f"no epoch of this run had finished, so {out} holds no " \
                                  "checkpoint of it"
        assert not (out / "state.json").exists()
    else:
        assert match.group(3) == f"the last good checkpoint (epoch {epoch - 1}) is kept in {out}"
        assert json.loads((out / "state.json").read_text())["epoch"] == epoch - 1
        state = load_file(str(out / "state.safetensors"))
        assert all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point())
    assert not (out / "model.safetensors").exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished one-epoch digits run (its state.* is what a resume reads)."""
    out = tmp_path_factory.mktemp("train") / "run"
    assert main(["train", *SMALL, "--epochs", "1", "--out", str(out)]) == 0
    return out


def _damage(run: Path, tmp_path: Path, name: str, damage) -> tuple[Path, list[str]]:  # noqa: ANN001
    out = tmp_path / "run"
    shutil.copytree(run, out)
    damage(out / name)
    return out, ["train", *SMALL, "--epochs", "1", "--out", str(out)]


def _nan_state(path: Path) -> None:
    state = load_file(str(path))
    key = next(k for k in state if k.startswith("model.") and state[k].is_floating_point())
    state[key] = torch.full_like(state[key], math.nan)
    save_file(state, str(path))


@pytest.mark.parametrize(
    "name, damage, needle",
    [
        ("state.json", lambda p: p.write_text("{\"epoch\": 1, "),
         r"{out}/state.json is damaged \(Expecting .*\): remove it or use --no-resume"),
        ("state.json", lambda p: p.write_text("[]"),
         r"{out}/state.json is damaged \(not a JSON object\): remove it or use --no-resume"),
        ("state.json", lambda p: p.write_text(p.read_text().replace('"epoch": 1', '"epoch": 7')),
         r"{out}/state.json is damaged \(epoch 7 does not match its history\): remove it .*"),
        ("state.safetensors", lambda p: p.write_bytes(p.read_bytes()[:100]),
         r"{out}/state.safetensors is not a readable safetensors file \(.*\): remove it or use "
         r"--no-resume"),
        ("state.safetensors", lambda p: torch.save({"w": torch.zeros(1)}, p),
         r"{out}/state.safetensors is a pickle \(torch.save\) file, not safetensors: refused "
         r"because loading a pickle could run code: remove it or use --no-resume"),
        ("state.safetensors", lambda p: p.unlink(),
         r"{out}/state.safetensors is missing, so {out} cannot resume: remove it .*"),
        ("state.safetensors", _nan_state,
         r"{out}/state.safetensors holds non-finite values \(model\..*\): remove it .*"),
        ("state.safetensors", lambda p: save_file({"model.x": torch.zeros(2)}, str(p)),
         r"{out}/state.safetensors: missing key .*: remove it or use --no-resume"),
    ],
)
def test_damaged_resume_state_is_named(name, damage, needle, finished_run, tmp_path,
                                       capsys) -> None:
    out, argv = _damage(finished_run, tmp_path, name, damage)
    assert main(argv) == 2
    assert re.fullmatch(needle.format(out=re.escape(str(out))), error_message(capsys))
    assert main([*argv, "--no-resume"]) == 0  # the way out the message names works


def test_damaged_state_is_a_corrupt_file_error_in_the_library(finished_run, tmp_path) -> None:
    out, _ = _damage(finished_run, tmp_path, "state.json", lambda p: p.write_bytes(b"\xff\xfe"))
    cfg = TrainConfig(**{**PRESETS["quick"], "epochs": 1, "train_limit": 128, "test_limit": 64})
    with pytest.raises(CorruptFileError, match="state.json is damaged"):
        train(cfg, out, device="cpu", progress=False)
