"""TorchScript classifiers through ``--model torchscript:PATH`` with the ``PATH.json`` sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from advimage.cli import main
from advimage.errors import CorruptFileError, UserInputError
from advimage.eval.config import resolve_path
from advimage.models.hub import load_model
from cli_helpers import error_message

# torch 2.13 deprecates writing TorchScript (torch.jit.script/save); loading stays supported
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

SIDECAR = {"input_shape": [3, 8, 8], "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.3, 0.4],
           "classes": ["cat", "dog"]}


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 2)).eval()


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ts") / "model.pt"
    torch.jit.save(torch.jit.script(_net()), str(path))
    (path.parent / "model.pt.json").write_text(json.dumps(SIDECAR))
    return path


def test_loads_with_sidecar_and_matches_the_scripted_net(scripted: Path) -> None:
    model, meta = load_model(f"torchscript:{scripted}")
    assert model.input_shape == (3, 8, 8) and model.classes == ["cat", "dog"]
    assert model.mean.flatten().tolist() == pytest.approx(SIDECAR["mean"])
    assert meta["source"] == f"torchscript:{scripted.resolve()}" and meta["arch"] == "torchscript"
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    norm = (x - torch.tensor(SIDECAR["mean"]).view(1, 3, 1, 1)) / \
        torch.tensor(SIDECAR["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _net()(norm))


def test_missing_sidecar_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "m.ts"
    torch.jit.save(torch.jit.script(_net()), str(path))
    with pytest.raises(UserInputError, match=r"needs the sidecar .*m\.ts\.json"):
        load_model(f"torchscript:{path}")


@pytest.mark.parametrize(("change", "message"), [
    ({"input_shape": [3, 8]}, "input_shape must be"),
    ({"mean": [0.5]}, "mean has 1 values"),
    ({"classes": ["a", "b", "c"]}, r"returns \(1, 2\) for one image, but .* declares 3 classes"),
    ({"input_shape": [1, 8, 8], "mean": [0.5], "std": [0.5]}, "forward on a 1x8x8 image failed"),
])
def test_bad_sidecar_is_one_line(tmp_path: Path, scripted: Path, change: dict,
                                 message: str) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(scripted.read_bytes())
    (tmp_path / "model.pt.json").write_text(json.dumps({**SIDECAR, **change}))
    with pytest.raises(CorruptFileError, match=message) as err:
        load_model(f"torchscript:{path}")
    assert "\n" not in str(err.value)


def test_pickle_is_never_taken_for_torchscript(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(_net().state_dict(), path)
    (tmp_path / "weights.pt.json").write_text(json.dumps(SIDECAR))
    with pytest.raises(CorruptFileError, match=r"is not a TorchScript archive"):
        load_model(f"torchscript:{path}")


def test_config_resolves_the_torchscript_path(tmp_path: Path, scripted: Path) -> None:
    spec = resolve_path("torchscript:model.pt", scripted.parent, "model")
    assert spec == f"torchscript:{scripted.resolve()}"
    with pytest.raises(ValueError, match="not found"):
        resolve_path("torchscript:missing.pt", tmp_path, "model")


def test_cli_missing_file_is_one_error_line(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["models", "eval", "--model", f"torchscript:{tmp_path / 'nope.pt'}",
               "--device", "cpu"])
    assert rc == 2
    assert error_message(capsys) == f"TorchScript file not found: {tmp_path / 'nope.pt'}"
