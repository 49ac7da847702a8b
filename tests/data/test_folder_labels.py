"""Folder labels follow the model's class names (or an explicit class map), never a silent
sorted position; empty class folders never shift labels; the mapping is recorded."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from PIL import Image

from advimage.data import load_dataset
from advimage.data.labels import parse_class_map
from advimage.errors import UserInputError

CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _tree(root: Path, counts: dict[str, int]) -> Path:
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (4, 4), (i, 0, 0)).save(root / name / f"{i}.png")
    return root


def _load(root: Path, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset("folder", "all", data_root=root, **kw)
    return ds, [str(w.message) for w in caught]


def test_folders_map_to_model_classes_by_name(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"Cat": 2, "dog": 3})  # case-insensitive
    ds, msgs = _load(root, classes=CIFAR)
    assert msgs == []
    assert ds.labels.tolist() == [3, 3, 5, 5, 5]  # not 0/1 by sorted position
    assert ds.classes == CIFAR and ds.num_classes == 10
    assert ds.label_source == "name" and ds.label_mapping == {"Cat": 3, "dog": 5}
    sub = ds.balanced(2)  # views keep the record
    assert sub.label_mapping == {"Cat": 3, "dog": 5} and sub.label_source == "name"
    d = sub.describe()
    assert d["label_source"] == "name" and d["label_mapping"] == {"Cat": 3, "dog": 5}
    assert d["n"] == 2 and d["num_classes"] == 10 and d["split"] == "all"


def test_unknown_folder_is_one_line_error_listing_the_classes(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"cat": 1, "kitty": 1})
    with pytest.raises(UserInputError) as info:
        load_dataset("folder", "all", data_root=root, classes=CIFAR)
    msg = str(info.value)
    assert "\n" not in msg and "kitty" in msg and "airplane, automobile" in msg
    assert "--class-map" in msg and "cat" not in msg.split("(")[0]


def test_explicit_class_map(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"dog": 1, "kitty": 2, "puppy": 1})
    ds, _ = _load(root, classes=CIFAR, class_map={"kitty": "CAT", "puppy": 5})
    assert ds.labels.tolist() == [5, 3, 3, 5]
    assert ds.label_mapping == {"dog": 5, "kitty": 3, "puppy": 5}
    assert ds.label_source == "class-map+name"
    ds, _ = _load(root, classes=CIFAR, class_map=parse_class_map("dog=5, kitty=3,puppy=5"))
    assert ds.label_source == "class-map" and ds.labels.tolist() == [5, 3, 3, 5]
    for bad, needle in (({"kity": 3}, "kity"), ({"kitty": 10}, "not a valid class index"),
                        ({"kitty": "lion"}, "'lion' is not one of")):
        with pytest.raises(UserInputError, match=needle):
            load_dataset("folder", "all", data_root=root, classes=CIFAR, class_map=bad)


@pytest.mark.filterwarnings("ignore:skipped 1 empty")
def test_models_without_names_use_position_or_a_full_map(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"a": 1, "b": 0, "c": 2})  # b is empty
    ds, msgs = _load(root)
    assert ds.labels.tolist() == [0, 2, 2]  # c keeps position 2: the empty b shifts nothing
    assert ds.classes == ["a", "b", "c"] and ds.label_source == "position"
    assert ds.label_mapping == {"a": 0, "c": 2}
    assert len(msgs) == 1 and "empty class folder" in msgs[0] and ": b " in msgs[0]
    ds, _ = _load(root, class_map={"a": 4, "c": 1})
    assert ds.labels.tolist() == [4, 1, 1] and ds.label_source == "class-map"
    assert ds.classes == ["0", "c", "2", "3", "a"]
    with pytest.raises(UserInputError, match="does not cover folder.*c"):
        load_dataset("folder", "all", data_root=root, class_map={"a": 0})
    with pytest.raises(UserInputError, match="no class names"):
        load_dataset("folder", "all", data_root=root, class_map={"a": "cat", "c": 1})


def test_empty_folder_with_unknown_name_is_skipped_not_an_error(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"cat": 1, "misc": 0})
    ds, msgs = _load(root, classes=CIFAR)
    assert ds.labels.tolist() == [3] and ds.label_mapping == {"cat": 3}
    assert len(msgs) == 1 and "misc" in msgs[0]


@pytest.mark.parametrize("text, needle", [("cat", "FOLDER=CLASS"), ("cat=", "FOLDER=CLASS"),
                                          ("a=1,a=2", "twice"), (" , ", "empty")])
def test_parse_class_map_errors(text: str, needle: str) -> None:
    with pytest.raises(UserInputError, match=needle):
        parse_class_map(text)


def test_registry_class_options_for_fixed_datasets() -> None:
    with pytest.raises(UserInputError, match="class map applies"):
        load_dataset("digits", "test", class_map={"a": 1})
    digits = [str(k) for k in range(10)]
    assert load_dataset("digits", "test", classes=digits).label_source == "dataset"
    with pytest.raises(UserInputError, match="another order"):
        load_dataset("digits", "test", classes=digits[::-1])
    with pytest.raises(UserInputError, match="split must be one of train, test"):
        load_dataset("digits", "all")
