"""Hugging Face image classifiers through ``--model``: ``hf:ORG/NAME`` and local model folders.

The hub is not reachable here, so tiny ViT and ConvNeXt models are built and saved locally; the
``hf:`` path is the same code (``from_pretrained``). HF_HUB_OFFLINE=1 makes the hub lookups fail
at once instead of waiting on the network.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers/huggingface_hub read it

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from cli_helpers import error_message  # noqa: E402

transformers = pytest.importorskip("transformers")

from advimage.cli import main  # noqa: E402
from advimage.errors import CorruptFileError, UserInputError  # noqa: E402
from advimage.eval.config import resolve_path  # noqa: E402
from advimage.models.hub import load_model  # noqa: E402

LABELS = {0: "apple", 1: "banana", 2: "cherry"}
VIT_MEAN, VIT_STD = [0.1, 0.2, 0.3], [0.5, 0.6, 0.7]
CNX_MEAN, CNX_STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("vit")
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_labels=3, id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()})
    transformers.AutoModelForImageClassification.from_config(config).save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=VIT_MEAN,
                                   image_std=VIT_STD).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def convnext_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("convnext")
    config = transformers.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2,
                                         num_labels=3)  # placeholder labels LABEL_0..2
    transformers.AutoModelForImageClassification.from_config(config).save_pretrained(folder)
    transformers.ConvNextImageProcessor(size={"shortest_edge": 48}, crop_pct=0.875,
                                        image_mean=CNX_MEAN,
                                        image_std=CNX_STD).save_pretrained(folder)
    return folder


def _own_logits(folder: Path, x: torch.Tensor, mean: list, std: list) -> torch.Tensor:
    net = transformers.AutoModelForImageClassification.from_pretrained(folder).eval()
    norm = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        return net(pixel_values=norm).logits


def test_vit_folder_matches_transformers_and_reads_its_configs(vit_dir: Path) -> None:
    model, meta = load_model(vit_dir)
    assert model.input_shape == (3, 32, 32)
    assert model.classes == ["apple", "banana", "cherry"] and model.num_classes == 3
    assert model.mean.flatten().tolist() == pytest.approx(VIT_MEAN)
    assert model.std.flatten().tolist() == pytest.approx(VIT_STD)
    assert meta["source"] == str(vit_dir.resolve()) and meta["arch"] == "hf-vit"
    assert not model.training
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(x)
    assert ours.shape == (4, 3)
    torch.testing.assert_close(ours, _own_logits(vit_dir, x, VIT_MEAN, VIT_STD))


def test_same_logits_as_the_transformers_pipeline_on_a_photo(vit_dir: Path) -> None:
    """[0, 1] pixels through advimage == the image processor's pixel_values through the net."""
    model, _ = load_model(vit_dir)
    pixels = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    processor = transformers.AutoImageProcessor.from_pretrained(vit_dir)
    pixel_values = processor(images=Image.fromarray(pixels), return_tensors="pt").pixel_values
    x = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).float() / 255  # (1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.net(pixel_values), atol=1e-5, rtol=1e-5)


def test_convnext_shortest_edge_size_and_placeholder_labels(convnext_dir: Path) -> None:
    model, meta = load_model(str(convnext_dir))
    assert model.input_shape == (3, 48, 48)  # size.shortest_edge: resized, centre-cropped
    assert model.classes is None  # LABEL_0..2 are no names: folder data maps by position
    assert meta["mean"] == pytest.approx(CNX_MEAN) and meta["std"] == pytest.approx(CNX_STD)
    x = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), _own_logits(convnext_dir, x, CNX_MEAN, CNX_STD))


def test_rescale_factor_folds_into_mean_and_std(tmp_path: Path, vit_dir: Path) -> None:
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((vit_dir / name).read_bytes())
    transformers.ViTImageProcessor(do_rescale=False, image_mean=[127.5] * 3,
                                   image_std=[63.75] * 3).save_pretrained(tmp_path)  # 0..255
    model, _ = load_model(tmp_path)
    assert model.mean.flatten().tolist() == pytest.approx([0.5] * 3)
    assert model.std.flatten().tolist() == pytest.approx([0.25] * 3)


def test_hf_spec_loads_from_the_hub_cache_and_records_the_commit(
    tmp_path: Path, vit_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub path itself, offline: a cache laid out as huggingface_hub writes it."""
    import huggingface_hub.constants as hub_constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--tiny-org--tiny-vit"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in vit_dir.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    model, meta = load_model("hf:tiny-org/tiny-vit")
    assert meta["source"] == f"hf:tiny-org/tiny-vit@{commit}"
    assert model.input_shape == (3, 32, 32) and model.classes == list(LABELS.values())
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(x), _own_logits(vit_dir, x, VIT_MEAN, VIT_STD))


def test_wrong_image_size_for_fixed_size_vit_is_one_line(vit_dir: Path) -> None:
    from advimage.errors import InputShapeError

    model, _ = load_model(vit_dir)
    with pytest.raises(InputShapeError, match="expects 3x32x32") as err:
        model(torch.rand(1, 3, 40, 40))
    assert "\n" not in str(err.value)


def test_unknown_or_unreachable_hub_name_fails_fast_in_one_line() -> None:
    start = time.monotonic()
    spec = "hf:no-such-org/no-such-model@main"
    with pytest.raises(UserInputError, match=f"^{spec}: cannot load this Hugging Face") as e:
        load_model(spec)
    assert time.monotonic() - start < 5 and "\n" not in str(e.value)


def test_folder_without_config_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "preprocessor_config.json").write_text("{}")
    with pytest.raises(CorruptFileError, match="has no config.json: not a transformers model"):
        load_model(tmp_path)


def test_damaged_model_folder_is_one_line(tmp_path: Path, vit_dir: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="not a loadable transformers image classifier"):
        load_model(tmp_path)


def test_missing_transformers_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(UserInputError, match=r"pip install 'advimage\[hf\]'"):
        load_model("hf:google/vit-base-patch16-224")


def test_importing_advimage_does_not_import_transformers() -> None:
    code = ("import sys, advimage, advimage.models.hub, advimage.models, advimage.cli, "
            "advimage.eval; print('transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_config_model_specs_pass_hf_names_and_resolve_folders(vit_dir: Path) -> None:
    assert resolve_path("hf:org/name@v1", None, "model") == "hf:org/name@v1"
    assert resolve_path(str(vit_dir), None, "model") == str(vit_dir.resolve())


def test_cli_models_eval_on_an_hf_folder(tmp_path: Path, vit_dir: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    for name in LABELS.values():
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "imgs" / name / f"{i}.png")
    rc = main(["models", "eval", "--model", str(vit_dir), "--data", "folder",
               "--data-root", str(tmp_path / "imgs"), "--split", "all", "--device", "cpu"])
    assert rc == 0
    assert "on 6 folder/all images" in capsys.readouterr().out


def test_cli_unreachable_hub_model_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["models", "eval", "--model", "hf:no-such-org/x", "--device", "cpu"])
    assert rc == 2
    assert error_message(capsys).startswith("hf:no-such-org/x: cannot load this Hugging Face")
