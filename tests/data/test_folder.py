"""ImageFolder trees: mixed formats/sizes/modes, skipped bad files, resize + centre crop."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advimage.data import load_dataset


def _tree(root: Path) -> dict[str, np.ndarray]:
    """cats: PNG RGB 20x30, PNG RGBA 16x16, PNG palette 24x24; dogs: JPEG RGB 40x20, PNG L 16x16,
    plus a corrupt .png, a truncated .png and a .txt that must be skipped."""
    rng = np.random.default_rng(0)
    (root / "cat").mkdir(parents=True)
    (root / "dog" / "nested").mkdir(parents=True)
    arrays = {
        "cat/a.png": rng.integers(0, 256, (30, 20, 3), dtype=np.uint8),
        "cat/b.png": rng.integers(0, 256, (16, 16, 4), dtype=np.uint8),
        "dog/nested/d.png": rng.integers(0, 256, (16, 16), dtype=np.uint8),
    }
    for rel, arr in arrays.items():
        Image.fromarray(arr).save(root / rel)
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).convert(
        "P", palette=Image.Palette.ADAPTIVE).save(root / "cat" / "c.png")
    Image.fromarray(np.full((20, 40, 3), 200, np.uint8)).save(root / "dog" / "e.jpg", quality=95)
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    good = (root / "cat" / "a.png").read_bytes()
    (root / "cat" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / ".DS_Store").write_bytes(b"\0\0")
    return arrays


def test_mixed_tree_loads_and_warns_once(tmp_path: Path) -> None:
    arrays = _tree(tmp_path / "pets")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset("folder", "all", data_root=tmp_path / "pets", image_size=16)
    msgs = [str(w.message) for w in caught]
    assert len(msgs) == 1, msgs
    for name in ("broken.png", "truncated.png", "notes.txt"):
        assert name in msgs[0]
    assert ".DS_Store" not in msgs[0] and "skipped 3" in msgs[0]
    assert ds.classes == ["cat", "dog"] and len(ds) == 5
    assert ds.labels.tolist() == [0, 0, 0, 1, 1] and ds.image_shape == (3, 16, 16)
    x, y = ds.tensors()
    assert x.shape == (5, 3, 16, 16) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    # RGBA 16x16 needs no resize: equals the RGB conversion exactly
    rgba = torch.from_numpy(np.array(Image.fromarray(arrays["cat/b.png"]).convert("RGB")))
    assert torch.equal(x[1], rgba.permute(2, 0, 1).float() / 255)
    # L image is replicated to 3 channels; file order is class, then path (e.jpg < nested/d.png)
    grey = torch.from_numpy(arrays["dog/nested/d.png"]).float() / 255
    assert all(torch.equal(x[4, c], grey) for c in range(3))
    assert torch.allclose(x[3], torch.full_like(x[3], 200 / 255), atol=3 / 255)  # flat JPEG


def test_resize_shorter_side_then_center_crop(tmp_path: Path) -> None:
    # 10 wide x 20 tall with a distinct value per row: shorter side 10 -> 10x20, crop rows 5..14
    img = np.repeat(np.arange(20, dtype=np.uint8)[:, None] * 10, 10, axis=1)
    (tmp_path / "only").mkdir()
    Image.fromarray(img).save(tmp_path / "only" / "x.png")
    ds = load_dataset("folder", "all", data_root=tmp_path, image_size=10, channels=1)
    x, _ = ds[0]
    assert x.shape == (1, 10, 10)
    assert torch.equal(x[0], torch.from_numpy(img[5:15]).float() / 255)


def test_split_folder_and_native_size(tmp_path: Path) -> None:
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new("RGB", (12, 8), (10, 20, 30)).save(tmp_path / split / cls / "i.png")
    (tmp_path / "test" / "b" / "j.png").write_bytes(
        (tmp_path / "test" / "b" / "i.png").read_bytes())
    ds = load_dataset("folder", "test", data_root=tmp_path)  # all 12x8: no image_size needed
    assert len(ds) == 3 and ds.image_shape == (3, 8, 12)
    x, y = next(ds.batches(2))
    assert x.shape == (2, 3, 8, 12) and y.tolist() == [0, 1]
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([10, 20, 30]) / 255)


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset("folder", data_root=tmp_path / "missing")
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_dataset("folder", "all", data_root=tmp_path)
    with pytest.raises(ValueError, match="data_root"):
        load_dataset("folder", "all")
    (tmp_path / "a").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "a" / "x.png")
    Image.new("RGB", (5, 4)).save(tmp_path / "a" / "y.png")
    with pytest.raises(ValueError, match="different sizes .*image_size"):
        load_dataset("folder", "all", data_root=tmp_path)
    with pytest.raises(ValueError, match="channels"):
        load_dataset("folder", "all", data_root=tmp_path, channels=2)
