"""EfficientNet-Lite0: the architecture (TF 'SAME' padding, key layout of the reference
package), and the shared ImageNet weights imported through ``advimage models import``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from advimage.cli import main
from advimage.models import create_model, load_checkpoint
from advimage.models.efficientnet_lite import SameConv2d
from advimage.models.imagenet_classes import imagenet_class_names, imagenet_wnids
from advimage.models.reference import infer_reference_arch

WEIGHTS = "efficientnet-lite0-57934424.pth"
# Measured on the first image of each class of imagenette/imagenet-val (class-balanced order):
# the ImageNet index of the top logit and its value; 7 of the 10 are right (69.6% on all 500).
EXPECTED_TOP = [(0, 9.5689), (217, 8.9911), (848, 8.5334), (491, 13.2087), (483, 6.6138),
                (776, 7.8977), (569, 9.7088), (571, 11.9679), (574, 8.5509), (701, 9.3454)]


def _weights(shared_models: Path) -> Path:
    path = shared_models / WEIGHTS
    if not path.is_file():
        pytest.skip(f"{WEIGHTS} not found in {shared_models}")
    return path


def test_same_conv_pads_bottom_right_like_tensorflow() -> None:
    conv = SameConv2d(1, 1, 3, stride=2)
    nn.init.ones_(conv.weight)
    out = conv(torch.ones(1, 1, 4, 4))  # TF: pad 0 on top/left, 1 on bottom/right
    assert out.shape == (1, 1, 2, 2)
    assert out[0, 0].tolist() == [[9.0, 6.0], [6.0, 4.0]]  # symmetric padding gives 4 at [0, 0]
    assert conv(torch.ones(1, 1, 224, 224)).shape[-2:] == (112, 112)
    conv5 = SameConv2d(1, 1, 5, stride=1)  # stride 1: symmetric, size kept
    assert conv5(torch.ones(1, 1, 7, 7)).shape[-2:] == (7, 7)


def test_architecture_registry_and_forward() -> None:
    model = create_model("efficientnet-lite0", 1000).eval()
    assert model.input_shape == (3, 224, 224)
    assert model.mean.flatten().tolist() == [0.5] * 3 and model.std.flatten().tolist() == [0.5] * 3
    assert model.classes is not None and model.classes[0] == "tench" and len(model.classes) == 1000
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    keys = [k for k in model.state_dict() if k.startswith("net._blocks.")]
    assert len({k.split(".")[2] for k in keys}) == 16  # 1+2+2+3+3+4+1 MBConv blocks
    assert "net._blocks.0._expand_conv.weight" not in model.state_dict()  # expand ratio 1
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64)).shape == (2, 1000)  # fully convolutional
    small = create_model("efficientnet-lite0", 10)
    assert small.classes is None and small.net._fc.out_features == 10
    with pytest.raises(ValueError, match="efficientnet-lite0 needs input_shape"):
        create_model("efficientnet-lite0", 10, input_shape=[3, 16, 16])


def test_imagenet_class_table() -> None:
    wnids, names = imagenet_wnids(), imagenet_class_names()
    assert len(wnids) == len(names) == 1000 and wnids == sorted(wnids)
    assert (wnids[0], names[0]) == ("n01440764", "tench")
    assert (wnids[701], names[701]) == ("n03888257", "parachute")


def test_reference_file_name_infers_arch() -> None:
    assert infer_reference_arch(f"/x/{WEIGHTS}") == "efficientnet-lite0"
    assert infer_reference_arch("efficientnet-lite0.pth") == "efficientnet-lite0"


@pytest.mark.shared
def test_keys_and_shapes_match_shared_file(shared_models: Path) -> None:
    state = torch.load(_weights(shared_models), weights_only=True, map_location="cpu")
    model = create_model("efficientnet-lite0", 1000)
    mine = {k.removeprefix("net."): tuple(v.shape) for k, v in model.state_dict().items()
            if k.startswith("net.")}
    assert list(mine) == list(state)  # same keys in the same order
    assert mine == {k: tuple(v.shape) for k, v in state.items()}


@pytest.mark.shared
def test_import_cli_and_logits_on_imagenet_val(shared_models: Path, tmp_path: Path,
                                               capsys) -> None:
    data_root = shared_models.parent / "data" / "imagenette"
    weights = _weights(shared_models)
    if not (data_root / "imagenet-val").is_dir():
        pytest.skip(f"imagenette not found at {data_root}")
    out = tmp_path / "effnet.safetensors"
    rc = main(["models", "import", str(weights), "--out", str(out)])  # arch from the file name
    assert rc == 0 and "as efficientnet-lite0" in capsys.readouterr().out
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["arch"] == "efficientnet-lite0" and sidecar["num_classes"] == 1000
    model, _ = load_checkpoint(out)
    assert model.classes[217] == "English Springer Spaniel"

    from advimage.data import load_dataset

    x, y = load_dataset("imagenette", "test", data_root=data_root).balanced(10).tensors()
    assert y.tolist() == [0, 217, 482, 491, 497, 566, 569, 571, 574, 701]
    with torch.no_grad():
        logits = model.eval()(x)  # (10, 1000)
    assert logits.argmax(1).tolist() == [index for index, _ in EXPECTED_TOP]
    top = [value for _, value in EXPECTED_TOP]
    assert logits.max(1).values.tolist() == pytest.approx(top, abs=2e-3)
    assert int((logits.argmax(1) == y).sum()) == 7
