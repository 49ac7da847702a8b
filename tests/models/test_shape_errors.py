"""Images that do not fit the model: one line (InputShapeError, exit 2), never a torch traceback.

Another number of channels is refused before the network runs: the images would broadcast
against the model's per-channel mean/std and give silently wrong logits (a CIFAR-10 ResNet on
1-channel digits scored 10% instead of failing). Another size is refused when the network
cannot take it (a 44-50 line RuntimeError in ``models eval``, ``attack``, ``eval robust`` and
``detect calibrate`` before).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from advimage.cli import main
from advimage.errors import InputShapeError
from advimage.models import ImageClassifier, create_model, save_checkpoint

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


@pytest.fixture(scope="module")
def misfits(tmp_path_factory) -> dict[str, Path]:
    """Checkpoints that do not fit the 1x8x8 digits: 3 channels, and 16x16 images."""
    out = tmp_path_factory.mktemp("misfits")
    torch.manual_seed(0)
    rgb = create_model("small-cnn", 10, input_shape=(3, 8, 8), mean=[0.5] * 3, std=[0.25] * 3)
    big = create_model("small-cnn", 10, input_shape=(1, 16, 16))
    return {"rgb": save_checkpoint(rgb, out / "rgb"), "big": save_checkpoint(big, out / "big")}


def test_channel_mismatch_is_refused_before_broadcasting() -> None:
    torch.manual_seed(0)
    model = create_model("small-cnn", 10, input_shape=(3, 8, 8), mean=[0.5] * 3, std=[0.25] * 3)
    with pytest.raises(InputShapeError) as info:
        model(torch.rand(2, 1, 8, 8))
    msg = str(info.value)
    assert msg == ("images of shape 1x8x8 do not fit model small-cnn, which expects 3x8x8; "
                   "use another model or dataset")


def test_size_mismatch_the_network_cannot_take() -> None:
    model = create_model("small-cnn", 10)  # 1x8x8; fc1 fixes the size
    with pytest.raises(InputShapeError, match="images of shape 1x16x16 do not fit model "
                       "small-cnn, which expects 1x8x8; use --image-size") as info:
        model(torch.rand(2, 1, 16, 16))
    assert isinstance(info.value.__cause__, RuntimeError)  # the torch error stays as the cause


def test_other_sizes_a_network_accepts_still_run() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    model = ImageClassifier(net, None, None, num_classes=3, input_shape=(1, 8, 8))
    assert model(torch.rand(2, 1, 12, 12)).shape == (2, 3)


def test_network_failures_on_the_right_shape_are_not_renamed() -> None:
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("a bug inside the network")

    model = ImageClassifier(Broken(), None, None, num_classes=2, input_shape=(1, 8, 8))
    with pytest.raises(RuntimeError, match="a bug inside the network") as info:
        model(torch.rand(2, 1, 8, 8))
    assert not isinstance(info.value, InputShapeError)


def _one_line(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("advimage: error: images of shape ") and "\n" not in err, err
    return err


def _commands(model: Path, tmp: Path) -> dict[str, list[str]]:
    data = ["--model", str(model), "--data", "digits", "--limit", "10", "--no-progress"]
    return {
        "models eval": ["models", "eval", *data],
        "attack": ["attack", *data, "--steps", "1", "--out", str(tmp / "adv")],
        "eval robust": ["eval", "robust", *data, "--attacks", "fgsm"],
        "detect calibrate": ["detect", "calibrate", *data, "--out", str(tmp / "cal")],
    }


@pytest.mark.parametrize("command", ["models eval", "attack", "eval robust", "detect calibrate"])
def test_cli_channel_mismatch_is_one_line(command, misfits, tmp_path, capsys) -> None:
    err = _one_line(capsys, _commands(misfits["rgb"], tmp_path)[command])
    assert "images of shape 1x8x8 do not fit model small-cnn, which expects 3x8x8" in err


@pytest.mark.parametrize("command", ["models eval", "attack", "eval robust", "detect calibrate"])
def test_cli_size_mismatch_is_one_line(command, misfits, tmp_path, capsys) -> None:
    err = _one_line(capsys, _commands(misfits["big"], tmp_path)[command])
    assert "images of shape 1x8x8 do not fit model small-cnn, which expects 1x16x16" in err
    assert "--image-size" in err


@pytest.mark.skipif(not (SHARED / "models").is_dir(), reason="../shared is absent")
def test_cli_cifar_resnet_on_digits(capsys) -> None:
    """The issue's case: a CIFAR-10 ResNet-20 on the 1-channel digits used to score 0.1."""
    weights = sorted((SHARED / "models").glob("resnet20-*.th"))
    if not weights:
        pytest.skip("no resnet20 weights in ../shared/models")
    err = _one_line(capsys, ["models", "eval", "--model", str(weights[0]), "--data", "digits",
                             "--limit", "10", "--no-progress"])
    assert "1x8x8 do not fit model resnet20, which expects 3x32x32" in err
