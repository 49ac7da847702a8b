"""Image decoding: every PIL mode to the expected channels, decompression bombs and damaged
files as one-line errors naming the file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from advimage.data import load_dataset
from advimage.data.images import decode_image
from advimage.errors import CorruptFileError

RGB = np.array([[[250, 10, 10], [10, 250, 10]], [[10, 10, 250], [120, 60, 30]]], np.uint8)


def _save(tmp_path: Path, name: str, im: Image.Image, **kw) -> Path:
    path = tmp_path / name
    im.save(path, **kw)
    return path


def _decoded(path: Path, mode: str = "RGB") -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no PIL warning may escape (e.g. palette transparency)
        return decode_image(path, mode, None)


def test_modes_convert_to_rgb(tmp_path: Path) -> None:
    grey = np.array([[0, 80], [160, 255]], np.uint8)
    rgba = np.dstack([RGB, np.array([[0, 255], [128, 7]], np.uint8)])
    pal = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    pal_t = pal.copy()
    pal_t.info["transparency"] = 0
    grey3 = np.repeat(grey[..., None], 3, 2)
    cases = {
        "l.png": (Image.fromarray(grey, "L"), grey3),
        "la.png": (Image.fromarray(np.dstack([grey, grey]), "LA"), grey3),
        "p.png": (pal, RGB),
        "pt.png": (pal_t, RGB),
        "rgba.png": (Image.fromarray(rgba, "RGBA"), RGB),  # alpha dropped, as torchvision does
        "i16.png": (Image.fromarray(grey.astype(np.uint16) * 257), grey3),  # 16-bit rescaled
    }
    for name, (im, expected) in cases.items():
        out = _decoded(_save(tmp_path, name, im))
        assert out.shape == (2, 2, 3) and out.dtype == np.uint8, name
        assert np.array_equal(out, expected), (name, out)


def test_cmyk_jpeg_and_greyscale_output(tmp_path: Path) -> None:
    flat = np.broadcast_to(np.array([200, 120, 40], np.uint8), (16, 16, 3)).copy()
    path = _save(tmp_path, "cmyk.jpg", Image.fromarray(flat).convert("CMYK"), quality=100)
    assert Image.open(path).mode == "CMYK"
    out = _decoded(path).astype(int)
    assert np.abs(out - flat).max() <= 3, out[0, 0]
    grey = _decoded(path, "L")
    expected = np.asarray(Image.fromarray(flat).convert("L"), dtype=int)
    assert grey.shape == (16, 16, 1) and np.abs(grey[..., 0] - expected).max() <= 3
    i16 = _save(tmp_path, "i16.png", Image.fromarray(np.full((2, 2), 65535, np.uint16)))
    assert (_decoded(i16, "L") == 255).all()  # rescaled, not clipped from 16 bits


@pytest.mark.parametrize("side", [20, 30])  # 400 px: PIL only warns; 900 px: PIL raises
def test_decompression_bomb_is_one_line_error_naming_the_file(tmp_path: Path, monkeypatch,
                                                             side: int) -> None:
    (tmp_path / "a").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "a" / "small.png")
    Image.new("RGB", (side, side)).save(tmp_path / "a" / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CorruptFileError) as info:
            load_dataset("folder", "all", data_root=tmp_path, image_size=4)
    msg = str(info.value)
    assert "\n" not in msg and "big.png" in msg and "decompression bomb" in msg
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_bomb_or_truncation_after_indexing_names_the_file(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "a").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(
        tmp_path / "a" / "x.jpg", quality=90)
    Image.new("RGB", (32, 32)).save(tmp_path / "a" / "y.png")
    ds = load_dataset("folder", "all", data_root=tmp_path)
    good = (tmp_path / "a" / "x.jpg").read_bytes()
    (tmp_path / "a" / "x.jpg").write_bytes(good[: len(good) // 2])  # truncated body
    with pytest.raises(CorruptFileError, match=r"cannot decode image .*x\.jpg: image file is "
                                               "truncated"):
        ds.tensors()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    msg = r"y\.png has more pixels than PIL's limit of 100.*decompression bomb, refused"
    with pytest.raises(CorruptFileError, match=msg):
        ds[1]
