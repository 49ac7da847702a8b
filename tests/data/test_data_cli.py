"""The CLI's data options: parse-time checks, folder labels by the model's class names (and
the mapping in the run record), split and image errors as one line."""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch
from PIL import Image

from advimage.cli import main
from advimage.cli.common import load_data
from advimage.errors import UserInputError

RESNET = "bundled:resnet20-cifar10"


def _one_line_error(capsys, *argv: str) -> str:
    code = main([*argv, "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("advimage: error:") and "\n" not in err, err
    return err


@pytest.mark.parametrize("option, value", [
    ("--batch-size", "0"), ("--batch-size", "-4"), ("--batch-size", "abc"), ("--limit", "0"),
    ("--image-size", "0"), ("--image-size", "-32"),
])
@pytest.mark.parametrize("command", [["models", "eval"], ["attack", "--out", "unused"]])
def test_sizes_and_counts_fail_at_parse_time(command, option, value, capsys, monkeypatch) -> None:
    def no_model(*_a, **_k):  # parse-time: the model is never loaded
        pytest.fail("the model was loaded before the option was checked")

    monkeypatch.setattr("advimage.models.hub.load_model", no_model)
    err = _one_line_error(capsys, *command, "--model", "bundled", option, value)
    assert err == f"advimage: error: {option} must be a positive integer" + (
        f", got {value!r}" if value == "abc" else f" (>= 1), got {value}")


def test_bad_class_map_fails_at_parse_time(capsys) -> None:
    err = _one_line_error(capsys, "models", "eval", "--model", "bundled", "--class-map", "cat")
    assert "--class-map" in err and "FOLDER=CLASS" in err


@pytest.fixture(scope="module")
def pets(cifar10_root: Path, tmp_path_factory) -> Path:
    """Five CIFAR-10 test cats and five dogs in ``cat/`` and ``dog/`` (no split folders)."""
    root = tmp_path_factory.mktemp("pets")
    for cls in ("cat", "dog"):
        (root / cls).mkdir()
        for src in sorted((cifar10_root / "test" / cls).glob("*.png"))[:5]:
            shutil.copy(src, root / cls / src.name)
    return root


def _accuracy(capsys, *argv: str, warns: str = "") -> float:
    assert main(["models", "eval", "--model", RESNET, *argv, "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert (warns in err) if warns else not err, err
    return float(out.split("accuracy ")[1].split()[0])


def test_folder_labels_follow_the_models_class_names(pets: Path, capsys) -> None:
    data = ["--data", "folder", "--data-root", str(pets), "--split", "all"]
    assert _accuracy(capsys, *data) >= 0.8  # by position (cat=0, dog=1) it was 0.0
    assert _accuracy(capsys, *data, "--class-map", "cat=dog,dog=cat") <= 0.2  # the map wins
    err = _one_line_error(capsys, "models", "eval", "--model", RESNET, "--data", "folder",
                          "--data-root", str(pets))
    assert "no train/ or test/ split folders" in err and "--split all" in err


def test_run_records_name_the_mapping(pets: Path, tmp_path: Path, capsys) -> None:
    data = ["--model", RESNET, "--data", "folder", "--data-root", str(pets), "--split", "all"]
    out = tmp_path / "robust"
    assert main(["eval", "robust", *data, "--attacks", "fgsm", "--eps", "1/255", "--out",
                 str(out), "--no-progress"]) == 0
    with sqlite3.connect(out / "results.sqlite") as conn:
        run = json.loads(conn.execute("SELECT value FROM meta WHERE key = 'run'").fetchone()[0])
    assert run["data"]["label_source"] == "name"
    assert run["data"]["label_mapping"] == {"cat": 3, "dog": 5}
    assert main(["attack", *data, "--attack", "fgsm", "--eps", "1/255", "--out",
                 str(tmp_path / "adv"), "--no-progress"]) == 0
    records = [json.loads(p.read_text()) for p in (tmp_path / "adv").glob("*.json")]
    assert any('"label_mapping": {"cat": 3, "dog": 5}' in json.dumps(r) for r in records)


def test_unknown_folder_and_bomb_are_one_line(pets: Path, tmp_path: Path, capsys,
                                              monkeypatch) -> None:
    tree = tmp_path / "t"
    shutil.copytree(pets, tree)
    (tree / "kitty").mkdir()
    shutil.copy(next((tree / "cat").iterdir()), tree / "kitty" / "k.png")
    argv = ["models", "eval", "--model", RESNET, "--data", "folder", "--data-root", str(tree),
            "--split", "all"]
    err = _one_line_error(capsys, *argv)
    assert "kitty" in err and "airplane" in err
    (tree / "misc").mkdir()  # empty: skipped with a warning, not an error
    assert _accuracy(capsys, *argv[4:], "--class-map", "kitty=cat",
                     warns="advimage: warning: skipped 1 empty class folder(s) in ") >= 0.7
    Image.new("RGB", (64, 64)).save(tree / "dog" / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    err = _one_line_error(capsys, *argv, "--class-map", "kitty=cat", "--image-size", "32")
    assert "huge.png" in err and "decompression bomb" in err


def test_load_data_fits_labels_and_channels_to_the_model(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (4, 4), (200, 100, 0)).save(tmp_path / name / "x.png")
    model = torch.nn.Linear(1, 1)
    model.num_classes, model.classes, model.input_shape = 2, None, (1, 4, 4)
    a = argparse.Namespace(data="folder", data_root=str(tmp_path), image_size=None, limit=None,
                           class_map=None)
    with pytest.raises(UserInputError, match="labels up to 2 but the model has 2 outputs "
                                             r"\(map the folders with --class-map"):
        load_data(a, "all", model=model)
    a.class_map = {"a": 0, "b": 1, "c": 1}
    ds = load_data(a, "all", model=model)
    assert ds.image_shape == (1, 4, 4) and ds.labels.tolist() == [0, 1, 1]  # greyscale model
    assert ds.label_source == "class-map"
