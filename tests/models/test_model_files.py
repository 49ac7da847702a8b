"""Damaged, pickled or misplaced model files, edited sidecars and ``models import`` options: each
a one-line error naming the file (exit 2), in the library and through ``advimage.cli.main``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from advimage.cli import main
from advimage.errors import CorruptFileError, UserInputError
from advimage.models import CheckpointError, create_model, load_checkpoint, save_checkpoint
from advimage.models.hub import load_model


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("advimage: error: "), err
    return err[0].removeprefix("advimage: error: ")


def _eval(model: Path | str) -> list[str]:
    return ["models", "eval", "--model", str(model), "--limit", "10", "--no-progress"]


@pytest.fixture()
def ckpt(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(create_model("small-cnn", 10, input_shape=(1, 8, 8)),
                           tmp_path / "m.safetensors", meta={"dataset": "digits"})


DAMAGES = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:200]),
                  r"{p} is not a readable safetensors file \(.*\)"),
    "zero bytes": (lambda p: p.write_bytes(b""),
                   r"{p} is not a readable safetensors file \(.*header too small.*\)"),
    "garbage": (lambda p: p.write_bytes(b"\x10" + bytes(7) + b"{garbage"),
                r"{p} is not a readable safetensors file \(.*\)"),
    "pickled": (lambda p: torch.save({"w": torch.zeros(1)}, p),
                r"{p} is a pickle \(torch.save\) file, refused because loading a pickle could run "
                r"code; convert it once with `advimage models import` .*"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGES))
def test_damaged_weights_are_one_line_corrupt_file_errors(kind, ckpt, capsys) -> None:
    damage, needle = DAMAGES[kind]
    damage(ckpt)
    pattern = needle.format(p=re.escape(str(ckpt)))
    with pytest.raises(CorruptFileError) as err:
        load_checkpoint(ckpt)
    assert re.fullmatch(pattern, str(err.value)), str(err.value)
    with pytest.raises(CorruptFileError):
        load_model(ckpt)  # every --model goes through hub.load_model
    assert main(_eval(ckpt)) == 2
    assert re.fullmatch(pattern, _error(capsys))


def test_directory_where_a_model_file_is_expected(tmp_path, ckpt, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(_eval(empty)) == 2
    assert _error(capsys) == f"{empty} is a directory, but a model file is expected"
    assert main(["models", "import", str(empty), "--arch", "resnet20", "--out",
                 str(tmp_path / "o.safetensors")]) == 2
    assert _error(capsys) == f"{empty} is a directory, but a reference model file is expected"
    run = tmp_path / "run"
    run.mkdir()
    for suffix in (".safetensors", ".json"):
        ckpt.with_suffix(suffix).rename((run / "model").with_suffix(suffix))
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(run)
    assert main(_eval(run)) == 2
    assert _error(capsys) == (f"{run} is a directory, but a model file is expected; did you mean "
                              f"{run / 'model.safetensors'}?")
    with pytest.raises(UserInputError, match="is a directory; give the checkpoint file"):
        save_checkpoint(create_model("small-cnn"), run)  # never writes run.safetensors beside it
    assert not tmp_path.joinpath("run.safetensors").exists()


def _edit(path: Path, **changes) -> Path:  # noqa: ANN003
    side = path.with_suffix(".json")
    side.write_text(json.dumps({**json.loads(side.read_text()), **changes}))
    return side


@pytest.mark.parametrize(
    "changes, needle",
    [
        (dict(mean=[0.5]), r"sidecar m.json: mean \[0.5\] disagrees with the normalization stored "
                           r"in the weights \[0.0\]; the sidecar was edited or belongs to other "
                           r"weights"),
        (dict(std=[0.25]), r"sidecar m.json: std \[0.25\] disagrees with the normalization .*"),
        (dict(std=[1.0, 1.0, 1.0]), r"sidecar m.json: std \[1.0, 1.0, 1.0\] disagrees .*"),
        (dict(mean="zero"), r"sidecar m.json: mean zero disagrees .*"),
        (dict(input_shape=[1, 16, 16]), r"sidecar m.json: input_shape \[1, 16, 16\] disagrees "
                                        r"with the weights \(small-cnn takes \[1, 8, 8\]\); .*"),
        (dict(classes=["a", "b"]), r"sidecar m.json: classes must list 10 names"),
    ],
)
def test_edited_sidecar_is_refused(changes, needle, ckpt, capsys) -> None:
    model, _ = load_checkpoint(ckpt)  # the unedited pair loads
    _edit(ckpt, **changes)
    with pytest.raises(CorruptFileError) as err:
        load_checkpoint(ckpt)
    assert re.fullmatch(needle, str(err.value)), str(err.value)
    assert main(_eval(ckpt)) == 2
    assert re.fullmatch(needle, _error(capsys))
    _edit(ckpt, mean=model.mean.flatten().tolist(), std=model.std.flatten().tolist(),
          input_shape=list(model.input_shape), classes=None)
    load_checkpoint(ckpt)  # restoring the true values makes it load again


def test_sidecar_equal_to_the_weights_still_loads(ckpt) -> None:
    side = json.loads(ckpt.with_suffix(".json").read_text())
    _edit(ckpt, mean=[float(v) for v in side["mean"]], dataset="renamed")  # not structural
    assert load_checkpoint(ckpt)[1]["dataset"] == "renamed"


@pytest.fixture()
def reference(tmp_path: Path) -> Path:
    """A ResNet-20 reference file in the akamaster layout (``state_dict``, ``module.`` keys)."""
    torch.manual_seed(0)
    net = create_model("resnet20").net.state_dict()
    path = tmp_path / "resnet20-0123abcd.th"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.items()}}, path)
    return path


def test_import_classes_round_trip(reference, tmp_path, capsys) -> None:
    out = tmp_path / "r20.safetensors"
    assert main(["models", "import", str(reference), "--classes", "a,b,c", "--out", str(out)]) == 2
    assert _error(capsys) == "--classes lists 3 names but the model has 10 outputs; give one " \
                             "name per output"
    assert not out.exists()
    names = [f"c{i}" for i in range(10)]
    argv = ["models", "import", str(reference), "--classes", ",".join(names), "--dataset", "mine",
            "--out", str(out)]
    assert main(argv) == 0
    assert "(mine, 10 classes)" in capsys.readouterr().out
    model, meta = load_checkpoint(out)
    assert model.classes == names and meta["dataset"] == "mine"
    assert main(["models", "import", str(reference), "--out", str(out)]) == 0  # its own names
    model, meta = load_checkpoint(out)
    assert model.classes[:2] == ["airplane", "automobile"] and meta["dataset"] == "cifar10"


def test_import_other_dataset_needs_classes(reference, tmp_path, capsys) -> None:
    out = tmp_path / "r20.safetensors"
    argv = ["models", "import", str(reference), "--dataset", "imagenet", "--out", str(out)]
    assert main(argv) == 2
    assert _error(capsys).startswith("--dataset imagenet: the resnet20 reference was trained on "
                                     "cifar10, whose class names are the only ones known; pass "
                                     "--classes with the 10 class names of imagenet")
    assert not out.exists()


def test_save_refuses_a_class_count_it_could_not_load(tmp_path) -> None:
    model = create_model("small-cnn")
    model.classes = ["a", "b", "c"]
    with pytest.raises(UserInputError, match="classes lists 3 names but the model has 10"):
        save_checkpoint(model, tmp_path / "m")
    assert not list(tmp_path.iterdir())


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (open, (str(self.marker), "w"))


def test_import_refuses_pickles_without_torch_advice(tmp_path, capsys) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "resnet20-deadbeef.th"
    torch.save({"state_dict": {"conv1.weight": _Exploit(marker)}}, evil)
    out = tmp_path / "o.safetensors"
    assert main(["models", "import", str(evil), "--out", str(out)]) == 2
    assert _error(capsys) == (f"{evil} was refused: it references io.open, and loading it could "
                              "run code (only tensors are loaded)")
    assert not marker.exists() and not out.exists()
    named = tmp_path / "resnet20-feed.safetensors"  # a pickle behind a safetensors name
    torch.save({"state_dict": {}}, named)
    argv = ["models", "import", str(named), "--arch", "resnet20", "--out", str(out)]
    assert main(argv) == 2
    assert _error(capsys) == (f"{named} is named .safetensors but holds a pickle (torch.save) "
                              "file: refused because loading a pickle could run code; rename it "
                              "to .pt to import it through the weights-only loader")
    named.write_bytes(b"\x08" + bytes(7) + b"{}garbage")
    assert main(argv) == 2
    assert _error(capsys).startswith(f"{named} is not a readable safetensors file (")
    garbage = tmp_path / "resnet20-beef.th"
    garbage.write_bytes(b"not a pickle at all")
    assert main(["models", "import", str(garbage), "--out", str(out)]) == 2
    assert _error(capsys).startswith(f"{garbage} is damaged or not a torch.save file (")


def test_import_a_bare_safetensors_state_dict(reference, tmp_path) -> None:
    from advimage.models import import_reference

    state = torch.load(reference, weights_only=True)["state_dict"]
    bare = tmp_path / "resnet20-cafe.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(bare))
    a, b = import_reference(bare, arch="resnet20"), import_reference(reference)
    assert a.fingerprint() == b.fingerprint()
