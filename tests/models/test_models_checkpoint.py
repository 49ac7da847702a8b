"""save_checkpoint / load_checkpoint: roundtrips for every arch, sidecar, and every error path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from advimage import __version__
from advimage.models import (
    CheckpointError,
    create_model,
    list_models,
    load_checkpoint,
    save_checkpoint,
    wrap_model,
)


@pytest.mark.parametrize("name", list_models())
def test_roundtrip_identical_outputs_and_fingerprint(name: str, tmp_path: Path) -> None:
    kwargs = {"depth": 2} if name == "vit-tiny" else {}  # a shallow ViT keeps the test fast
    model = create_model(name, num_classes=5, **kwargs).eval()
    fp = model.fingerprint()
    assert fp == model.fingerprint() and len(fp) == 64
    path = save_checkpoint(model, tmp_path / "ckpt", meta={"dataset": "unit", "accuracy": 0.5})
    assert path == tmp_path / "ckpt.safetensors" and path.exists()
    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    assert (loaded.arch, loaded.num_classes, loaded.input_shape) == (name, 5, model.input_shape)
    assert loaded.fingerprint() == fp
    x = torch.rand(2, *model.input_shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert meta["dataset"] == "unit" and meta["accuracy"] == 0.5
    # The fingerprint changes with any weight.
    with torch.no_grad():
        next(loaded.parameters()).view(-1)[0] += 1e-3
    assert loaded.fingerprint() != fp


def test_fingerprint_independent_of_device_layout_and_process() -> None:
    torch.manual_seed(1)
    a = create_model("small-cnn")
    torch.manual_seed(1)
    b = create_model("small-cnn").to(memory_format=torch.channels_last)
    assert a.fingerprint() == b.fingerprint()
    torch.manual_seed(2)
    assert create_model("small-cnn").fingerprint() != a.fingerprint()
    # Same weights under a different arch name give a different fingerprint.
    b.arch = "other"
    assert a.fingerprint() != b.fingerprint()


def test_sidecar_contents(tmp_path: Path) -> None:
    model = create_model("resnet20", num_classes=4, input_shape=(3, 16, 16))
    model.classes = ["a", "b", "c", "d"]
    meta = {"dataset": "cifar10", "accuracy": 0.91, "train_config": {"lr": 0.1}, "seed": 3,
            "extra": [1, 2]}
    path = save_checkpoint(model, tmp_path / "sub" / "r20.safetensors", meta=meta)
    side = json.loads((tmp_path / "sub" / "r20.json").read_text())
    for key in ("format_version", "arch", "num_classes", "input_shape", "classes", "mean", "std",
                "dataset", "accuracy", "train_config", "seed", "advimage_version",
                "torch_version", "created"):
        assert key in side, key
    assert side["arch"] == "resnet20" and side["num_classes"] == 4
    assert side["input_shape"] == [3, 16, 16]
    assert side["arch_kwargs"] == {"input_shape": [3, 16, 16]}
    assert side["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert side["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert side["classes"] == ["a", "b", "c", "d"]
    assert side["train_config"] == {"lr": 0.1} and side["seed"] == 3 and side["extra"] == [1, 2]
    assert side["advimage_version"] == __version__
    assert side["torch_version"] == torch.__version__
    # Weights are a plain safetensors state dict with the wrapper's keys.
    tensors = load_file(str(path))
    assert set(tensors) == set(model.state_dict())
    assert "net.conv1.weight" in tensors and "mean" in tensors
    loaded, _ = load_checkpoint(path)
    assert loaded.classes == ["a", "b", "c", "d"] and loaded.input_shape == (3, 16, 16)
    # Atomic writes leave no temporary files behind.
    assert sorted(p.name for p in path.parent.iterdir()) == ["r20.json", "r20.safetensors"]


def test_suffix_handling_and_overwrite(tmp_path: Path) -> None:
    model = create_model("small-cnn")
    assert save_checkpoint(model, tmp_path / "m.pt").name == "m.safetensors"
    assert save_checkpoint(model, tmp_path / "m.v2").name == "m.v2.safetensors"
    with torch.no_grad():
        model.net.fc2.bias.fill_(1.0)
    save_checkpoint(model, tmp_path / "m.pt")  # overwrite in place
    loaded, _ = load_checkpoint(tmp_path / "m")  # the stem also resolves
    assert torch.equal(loaded.net.fc2.bias, torch.ones(10))


def test_map_location_and_train_mode_state(tmp_path: Path) -> None:
    model = create_model("resnet20")
    model.train()
    model(torch.rand(4, 3, 32, 32))  # updates BatchNorm running stats
    path = save_checkpoint(model, tmp_path / "r")
    loaded, _ = load_checkpoint(path, map_location=torch.device("cpu"))
    assert torch.equal(loaded.net.bn1.running_mean, model.net.bn1.running_mean)
    assert int(loaded.net.bn1.num_batches_tracked) == 1


def test_meta_validation(tmp_path: Path) -> None:
    model = create_model("small-cnn")
    with pytest.raises(ValueError, match="may not override 'arch'"):
        save_checkpoint(model, tmp_path / "a", meta={"arch": "resnet20"})
    with pytest.raises(ValueError, match="JSON-serializable"):
        save_checkpoint(model, tmp_path / "b", meta={"x": object()})
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="ImageClassifier"):
        save_checkpoint(torch.nn.Linear(2, 2), tmp_path / "c")  # type: ignore[arg-type]


def test_pickle_rejected(tmp_path: Path) -> None:
    model = create_model("small-cnn")
    for name in ("model.pt", "model.safetensors"):  # suffix or content gives it away
        torch.save(model.state_dict(), tmp_path / name)
        with pytest.raises(CheckpointError, match="pickle.*import_reference"):
            load_checkpoint(tmp_path / name)
    assert issubclass(CheckpointError, ValueError)


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing.safetensors")
    path = save_checkpoint(create_model("small-cnn"), tmp_path / "m")
    path.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match="sidecar m.json not found"):
        load_checkpoint(path)


def _edit_sidecar(path: Path, **changes) -> None:
    side_path = path.with_suffix(".json")
    side = json.loads(side_path.read_text())
    side.update(changes)
    side_path.write_text(json.dumps(side))


def test_sidecar_arch_mismatch(tmp_path: Path) -> None:
    path = save_checkpoint(create_model("resnet20"), tmp_path / "r")
    _edit_sidecar(path, arch="resnet32", fingerprint=None)
    with pytest.raises(CheckpointError, match="missing key 'net.layer1.3"):
        load_checkpoint(path)
    _edit_sidecar(path, arch="vgg11-cifar")
    with pytest.raises(CheckpointError, match="missing key"):
        load_checkpoint(path)
    _edit_sidecar(path, arch="resnet20", num_classes=100)
    with pytest.raises(CheckpointError, match="shape mismatch for 'net.linear.weight'"):
        load_checkpoint(path)
    _edit_sidecar(path, num_classes=10, classes=["only-one"])
    with pytest.raises(CheckpointError, match="classes must list 10 names"):
        load_checkpoint(path)
    _edit_sidecar(path, arch="no-such-net", classes=None)
    with pytest.raises(CheckpointError, match="'no-such-net' is not a registered model.*resnet20"):
        load_checkpoint(path)


def test_replaced_weights_detected(tmp_path: Path) -> None:
    first = save_checkpoint(create_model("small-cnn"), tmp_path / "a")
    save_checkpoint(create_model("small-cnn"), tmp_path / "b")
    (tmp_path / "b.safetensors").replace(first)  # same arch, other weights
    with pytest.raises(CheckpointError, match="fingerprint"):
        load_checkpoint(first)


def test_corrupt_files(tmp_path: Path) -> None:
    path = save_checkpoint(create_model("small-cnn"), tmp_path / "m")
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path)
    save_checkpoint(create_model("small-cnn"), tmp_path / "m")
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(path)


def test_wrapped_custom_model_saves_but_needs_registration_to_load(tmp_path: Path) -> None:
    model = wrap_model(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)),
                       input_shape=(3, 2, 2))
    path = save_checkpoint(model, tmp_path / "w")
    assert json.loads(path.with_suffix(".json").read_text())["arch"] == "custom"
    with pytest.raises(CheckpointError, match="'custom' is not a registered model"):
        load_checkpoint(path)
