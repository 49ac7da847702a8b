"""The ``imagenet`` and ``imagenette`` datasets: ImageNet-1k labels from WordNet-id folders or a
class map, resize + centre crop, RGB from grayscale/CMYK, Imagenette's held-out train split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advimage.cli import main
from advimage.data import load_dataset
from advimage.data.imagenet import read_class_map
from advimage.errors import UserInputError

TENCH, GOLDFISH, PARACHUTE = "n01440764", "n01443537", "n03888257"


def _jpeg(path: Path, color: tuple[int, ...], size: tuple[int, int] = (300, 200),
          mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, quality=95)


def _framed_png(path: Path) -> None:
    """256x256: a 16-pixel red frame around a green square."""
    arr = np.zeros((256, 256, 3), np.uint8)
    arr[:, :, 0] = 255
    arr[16:240, 16:240] = (0, 255, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_imagenet_labels_and_rgb_conversion(tmp_path: Path) -> None:
    _jpeg(tmp_path / "val" / PARACHUTE / "a.JPEG", (200, 30, 30))
    _jpeg(tmp_path / "val" / TENCH / "b.JPEG", (90,), mode="L")  # grayscale
    _jpeg(tmp_path / "val" / GOLDFISH / "c.jpg", (0, 0, 0, 0), mode="CMYK")  # CMYK white
    (tmp_path / "val" / TENCH / "notes.txt").write_text("not an image")
    ds = load_dataset("imagenet", "test", data_root=tmp_path)
    assert len(ds) == 3 and ds.num_classes == 1000 and ds.image_shape == (3, 224, 224)
    assert ds.labels.tolist() == [0, 1, 701]  # sorted wnid folders -> ImageNet indices
    assert (ds.classes[0], ds.classes[701]) == ("tench", "parachute")
    x, _ = ds.tensors()
    assert x.shape == (3, 3, 224, 224) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.full_like(x[0], 90 / 255), atol=0.02)  # gray in 3 channels
    assert x[1].min() > 0.95  # CMYK (0,0,0,0) is white
    assert x[2, 0].mean() == pytest.approx(200 / 255, abs=0.02)
    assert x[2, 1].mean() == pytest.approx(30 / 255, abs=0.02)
    assert len(load_dataset("imagenet", "test", data_root=tmp_path, image_size=64)[0][0][0]) == 64


def test_imagenet_crops_like_the_standard_pipeline(tmp_path: Path) -> None:
    _framed_png(tmp_path / "val" / TENCH / "framed.png")
    standard = load_dataset("imagenet", "test", data_root=tmp_path)[0][0]  # 256 -> crop 224
    assert standard[0].max() < 0.05 and standard[1].min() > 0.95  # the frame is cropped away
    whole = load_dataset("imagenet", "test", data_root=tmp_path, resize=224)[0][0]
    assert whole[0, 0, 0] > 0.9 and whole[1, 112, 112] > 0.95  # frame kept, only scaled
    with pytest.raises(UserInputError, match="resize must be an int >= image_size"):
        load_dataset("imagenet", "test", data_root=tmp_path, resize=100)


def test_imagenet_class_map_file_and_mapping(tmp_path: Path) -> None:
    _jpeg(tmp_path / "train" / TENCH / "a.JPEG", (1, 2, 3))
    _jpeg(tmp_path / "train" / "mine" / "b.JPEG", (1, 2, 3))
    with pytest.raises(UserInputError, match=r"class folder .*mine is not in the class map"):
        load_dataset("imagenet", "train", data_root=tmp_path)
    ds = load_dataset("imagenet", "train", data_root=tmp_path, class_map={"mine": "goldfish"})
    assert ds.labels.tolist() == [1, 0]  # sorted folders: "mine", then the tench wnid
    ds = load_dataset("imagenet", "train", data_root=tmp_path, class_map={"mine": 1200})
    assert ds.labels.tolist() == [1200, 0] and ds.num_classes == 1201
    (tmp_path / "classes.tsv").write_text(f"wnid\tindex\tname\n{TENCH}\t5\tfish\nmine\t7\n")
    ds = load_dataset("imagenet", "train", data_root=tmp_path)  # <root>/classes.tsv wins
    assert ds.labels.tolist() == [7, 5] and ds.classes[5] == "fish"
    assert ds.classes[7] == "rooster" and ds.num_classes == 1000  # unnamed: the ImageNet name
    with pytest.raises(UserInputError, match="not an ImageNet-1k class name"):
        load_dataset("imagenet", "train", data_root=tmp_path, class_map={"mine": "dragon"})


def test_read_class_map_errors(tmp_path: Path) -> None:
    bad = tmp_path / "map.tsv"
    bad.write_text("wnid,index\nn1,0\nn2,two\n")
    with pytest.raises(UserInputError, match=r"map.tsv line 3: class index 'two'"):
        read_class_map(bad)
    bad.write_text("n1\t0\nn2\t0\n")
    with pytest.raises(UserInputError, match="line 2: negative or repeated"):
        read_class_map(bad)
    bad.write_text("# nothing\n")
    with pytest.raises(UserInputError, match="lists no classes"):
        read_class_map(bad)
    good = tmp_path / "ok.csv"
    good.write_text("n9,3,nine\nn8,4\n")
    assert read_class_map(good) == {"n9": (3, "nine"), "n8": (4, None)}


def test_imagenette_splits_hold_out_the_validation_images(tmp_path: Path) -> None:
    root = tmp_path / "nette"
    for name in ("ILSVRC2012_val_1.JPEG", "ILSVRC2012_val_2.JPEG"):
        _jpeg(root / "imagenet-val" / PARACHUTE / name, (9, 9, 9), size=(224, 224))
    for name in ("ILSVRC2012_val_1.JPEG", "n03888257_7.JPEG", "n03888257_8.JPEG"):
        _jpeg(root / "val" / PARACHUTE / name, (9, 9, 9), size=(224, 224))
    with pytest.raises(UserInputError, match="imagenette needs its class map"):
        load_dataset("imagenette", "test", data_root=root)
    (root / "classes.tsv").write_text(f"wnid\timagenet_index\tname\n{PARACHUTE}\t701\tchute\n")
    test = load_dataset("imagenette", "test", data_root=root)
    train = load_dataset("imagenette", "train", data_root=root)
    assert len(test) == 2 and len(train) == 2  # the val image also in imagenet-val is dropped
    assert train.labels.tolist() == [701, 701] and test.classes[701] == "chute"
    assert test.num_classes == 1000 and train.image_shape == (3, 224, 224)


def test_cli_reports_a_missing_root_in_one_line(tmp_path: Path, capsys) -> None:
    rc = main(["models", "eval", "--model", "bundled", "--data", "imagenette",
               "--data-root", str(tmp_path / "absent")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("advimage: error: imagenette data root") and "absent" in err[0]


@pytest.mark.shared
def test_shared_imagenette(shared_models: Path) -> None:
    root = shared_models.parent / "data" / "imagenette"
    if not (root / "classes.tsv").is_file():
        pytest.skip(f"imagenette not found at {root}")
    test = load_dataset("imagenette", "test", data_root=root)
    train = load_dataset("imagenette", "train", data_root=root)
    assert (len(test), len(train)) == (500, 3925 - 134)
    assert sorted(set(test.labels.tolist())) == [0, 217, 482, 491, 497, 566, 569, 571, 574, 701]
    assert torch.bincount(test.labels, minlength=1000)[[0, 701]].tolist() == [50, 50]
    assert test.classes[217] == "English springer"  # names from classes.tsv
    x, y = train.balanced(4).tensors()
    assert x.shape == (4, 3, 224, 224) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert y.tolist() == [0, 217, 482, 491]
