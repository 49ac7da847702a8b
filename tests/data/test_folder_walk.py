"""The folder walk: directory links are not followed (no repeated or endless trees), only
regular files are opened, the walk is bounded, and split folders are never guessed."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from PIL import Image

from advimage.data import load_dataset
from advimage.errors import UserInputError


def _tree(root: Path, per_class: int = 5, classes: tuple[str, ...] = ("a", "b", "c")) -> Path:
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (4, 4), (i, 9, 9)).save(root / name / f"{i}.png")
    return root


def _load(root: Path, split: str = "all", **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset("folder", split, data_root=root, **kw)
    return ds, [str(w.message) for w in caught]


def test_links_to_parent_folders_are_not_followed(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t")
    os.symlink(root, root / "a" / "up")  # the case: 615 images instead of 15
    os.symlink(root, root / "b" / "up2")  # two such links made the walk endless
    os.symlink("..", root / "c" / "parent")
    ds, msgs = _load(root)
    assert len(ds) == 15 and ds.labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert len(msgs) == 1 and "did not follow 3 symbolic link" in msgs[0]
    assert "a/up" in msgs[0] and "c/parent" in msgs[0]


def test_class_folder_links(tmp_path: Path) -> None:
    elsewhere = _tree(tmp_path / "other", per_class=2, classes=("x",))
    root = _tree(tmp_path / "t", per_class=1, classes=("a",))
    os.symlink(elsewhere / "x", root / "x")  # a class folder that is a link: used
    os.symlink(root, root / "loop")  # a class "folder" pointing at the tree itself: skipped
    ds, msgs = _load(root)
    assert ds.classes == ["a", "x"] and ds.labels.tolist() == [0, 1, 1]
    assert len(msgs) == 1 and "loop" in msgs[0]


def test_special_and_broken_files_are_skipped_not_opened(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t", per_class=1, classes=("a",))
    os.mkfifo(root / "a" / "pipe.png")  # opening it would block forever
    os.symlink(root / "missing.png", root / "a" / "broken.png")
    ds, msgs = _load(root)
    assert len(ds) == 1
    assert len(msgs) == 1 and "skipped 2" in msgs[0] and "pipe.png" in msgs[0]


def test_walk_is_bounded(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t", per_class=2, classes=("a", "b"))
    assert len(_load(root, max_files=4)[0]) == 4
    with pytest.raises(UserInputError, match="more than 3 files; the walk stops"):
        load_dataset("folder", "all", data_root=root, max_files=3)
    deep = root / "a" / "1" / "2" / "3"
    deep.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(deep / "x.png")
    assert len(_load(root, max_depth=3)[0]) == 5
    with pytest.raises(UserInputError, match=r"nested more than 2 folders"):
        load_dataset("folder", "all", data_root=root, max_depth=2)


def test_split_folders_are_never_guessed(tmp_path: Path) -> None:
    flat = _tree(tmp_path / "flat", per_class=1)
    for split in ("test", "train"):
        with pytest.raises(UserInputError, match="no train/ or test/ split folders.*--split all"):
            load_dataset("folder", split, data_root=flat)
    assert len(_load(flat)[0]) == 3
    split_tree = tmp_path / "split"
    _tree(split_tree / "train", per_class=1)
    with pytest.raises(UserInputError, match="has no test/ folder .its splits: train"):
        load_dataset("folder", "test", data_root=split_tree)
    with pytest.raises(UserInputError, match="split into train: choose one"):
        load_dataset("folder", "all", data_root=split_tree)
    assert len(_load(split_tree, "train")[0]) == 3
