"""Reading images to score: PNG files, safetensors tensors, attack output folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from advimage.cli.detect_inputs import load_images


def test_png_and_safetensors(tmp_path):
    arr = (np.arange(64, dtype=np.uint8) * 4).reshape(8, 8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    x = torch.rand(3, 1, 8, 8)
    save_file({"x_adv": x, "y": torch.zeros(3, dtype=torch.long)}, str(tmp_path / "t.safetensors"))
    imgs, names = load_images([tmp_path / "a.png", tmp_path / "t.safetensors"], (1, 8, 8))
    assert imgs.shape == (4, 1, 8, 8)
    assert torch.allclose(imgs[0, 0], torch.from_numpy(arr).float() / 255)
    assert torch.equal(imgs[1:], x)
    assert names[0].endswith("a.png") and names[3].endswith("t.safetensors[2]")


def test_attack_folder(tmp_path, digits_model):
    from advimage.attacks import FGSM
    from advimage.data import load_dataset
    from advimage.eval.export import save_adversarials

    ds = load_dataset("digits", "test").balanced(12)
    save_adversarials(digits_model, ds, FGSM(eps=0.1), tmp_path, batch_size=5, progress=False)
    imgs, names = load_images([tmp_path], (1, 8, 8))
    x = ds.tensors()[0]
    assert imgs.shape == (12, 1, 8, 8) and (imgs - x).abs().max() <= 0.1 + 1e-6
    assert names[0] == f"{tmp_path}[0]" and names[-1] == f"{tmp_path}[11]"
    # shards without a manifest (an older advimage, or any folder) are never globbed
    legacy = tmp_path / "legacy"
    (legacy / "tensors").mkdir(parents=True)
    save_file({"x_adv": x, "x": x.clone()}, str(legacy / "tensors" / "batch_00000.safetensors"))
    with pytest.raises(ValueError, match="no manifest.json"):
        load_images([legacy], (1, 8, 8))


def test_rgb_png_to_model_channels(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    imgs, _ = load_images([tmp_path / "c.png"], (3, 4, 4))
    assert torch.allclose(imgs[0].permute(1, 2, 0), torch.from_numpy(rgb).float() / 255)


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="no images"):
        load_images([])
    with pytest.raises(ValueError, match="not found"):
        load_images([tmp_path / "missing.png"])
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_images([tmp_path / "x.txt"])
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "s.png")
    with pytest.raises(ValueError, match="do not fit the model"):
        load_images([tmp_path / "s.png"], (1, 8, 8))
    save_file({"a": torch.rand(1, 1, 2, 2), "b": torch.rand(1)}, str(tmp_path / "m.safetensors"))
    with pytest.raises(ValueError, match="expected one of"):
        load_images([tmp_path / "m.safetensors"])
    (tmp_path / "junk.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read safetensors"):
        load_images([tmp_path / "junk.safetensors"])


def test_damaged_or_bomb_images_are_named(tmp_path, monkeypatch):
    """Scored pictures go through the data layer's decoder: a truncated file or a
    decompression bomb is a CorruptFileError naming the file, never a PIL traceback."""
    from advimage.errors import CorruptFileError

    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(good)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:40])
    with pytest.raises(CorruptFileError, match="cut.png"):
        load_images([cut], (1, 8, 8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 64 pixels > 2 * 10: a "bomb"
    with pytest.raises(CorruptFileError, match="good.png"):
        load_images([good], (1, 8, 8))
