"""Every registered architecture: shapes, [0,1] input, features, channels_last, param counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advimage.models import ImageClassifier, create_model, list_models
from advimage.models.resnet_cifar import ShortcutA

ARCHS = list_models()

# Output shape (without batch) of one representative layer per built-in arch, default input.
FEATURE_SHAPES = {
    "small-cnn": ("pool", (64, 4, 4)),
    "lenet5-mnist": ("maxpool2", (64, 7, 7)),
    "resnet20": ("layer2", (32, 16, 16)),
    "resnet32": ("layer3", (64, 8, 8)),
    "resnet44": ("layer1.6.conv2", (16, 32, 32)),
    "resnet56": ("layer3.8", (64, 8, 8)),
    "resnet18-cifar": ("layer4", (512, 4, 4)),
    "vgg11-cifar": ("features", (512, 1, 1)),
    "vgg11-bn-cifar": ("features.1", (64, 32, 32)),
    "vgg19-cifar": ("pool", (512, 1, 1)),
    "vgg19-bn-cifar": ("features.0", (64, 32, 32)),
    "vit-tiny": ("blocks.11", (65, 192)),
}

# Parameter counts from the papers' tables (He et al. 2016 Table 6: 0.27M, 0.46M, 0.66M,
# 0.85M) and from the layer formulas for the others.
def _conv(cin: int, cout: int, k: int = 3, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def _vgg_params(cfg: list, bn: bool) -> int:
    total, cin = 0, 3
    for c in cfg:
        if c == "M":
            continue
        total += _conv(cin, c, bias=not bn) + (2 * c if bn else 0)
        cin = c
    return total + 512 * 10 + 10


_VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
_VGG19 = [64, 64, "M", 128, 128, "M"] + [256] * 4 + ["M"] + ([512] * 4 + ["M"]) * 2
_VIT = (
    _conv(3, 192, k=4) + 192 + 65 * 192  # patch embed, cls token, pos emb
    + 12 * (2 * 2 * 192 + (192 * 576 + 576) + (192 * 192 + 192)  # norms, qkv, proj
            + (192 * 768 + 768) + (768 * 192 + 192))  # mlp
    + 2 * 192 + 192 * 10 + 10  # final norm, head
)
PARAM_COUNTS = {
    "lenet5-mnist": _conv(1, 32) + _conv(32, 64) + 3136 * 200 + 200 + 200 * 10 + 10,
    "small-cnn": _conv(1, 32) + _conv(32, 64) + 1024 * 128 + 128 + 128 * 10 + 10,
    "vgg11-cifar": _vgg_params(_VGG11, False),
    "vgg11-bn-cifar": _vgg_params(_VGG11, True),
    "vgg19-cifar": _vgg_params(_VGG19, False),
    "vgg19-bn-cifar": _vgg_params(_VGG19, True),
    "vit-tiny": _VIT,
}
PAPER_MILLIONS = {"resnet20": 0.27, "resnet32": 0.46, "resnet44": 0.66, "resnet56": 0.85,
                  "resnet18-cifar": 11.17}


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def models() -> dict[str, ImageClassifier]:
    torch.manual_seed(0)
    return {name: create_model(name).eval() for name in ARCHS}


def test_all_brief_archs_registered() -> None:
    assert set(FEATURE_SHAPES) <= set(ARCHS)


@pytest.mark.parametrize("name", ARCHS)
def test_forward_shape_finite_and_channels_last(name: str, models) -> None:
    model = models[name]
    assert model.arch == name and model.num_classes == 10
    x = torch.rand(2, *model.input_shape)  # (B, C, H, W) in [0, 1]
    with torch.no_grad():
        out = model(x)
        model.to(memory_format=torch.channels_last)
        out_cl = model(x.contiguous(memory_format=torch.channels_last))
        model.to(memory_format=torch.contiguous_format)
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    assert model.mean.shape == model.std.shape == (1, model.input_shape[0], 1, 1)
    scale = out.abs().max().clamp_min(1.0)
    assert ((out_cl - out).abs().max() / scale) < 1e-4


def test_normalization_inside() -> None:
    model = create_model("resnet20").eval()
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.net((x - mean) / std))


@pytest.mark.parametrize("name", ARCHS)
def test_parameter_count(name: str, models) -> None:
    n = _n_params(models[name])
    if name in PARAM_COUNTS:
        assert n == PARAM_COUNTS[name]
    elif name in PAPER_MILLIONS:
        assert round(n / 1e6, 2) == PAPER_MILLIONS[name]


@pytest.mark.parametrize("name", ARCHS)
def test_features(name: str, models) -> None:
    model = models[name]
    names = model.layer_names()
    assert names and all(names)
    layers = [names[0], names[-1]]
    expected = None
    if name in FEATURE_SHAPES:
        layer, expected = FEATURE_SHAPES[name]
        layers.append(layer)
    layers = list(dict.fromkeys(layers))  # unique, order kept
    x = torch.rand(2, *model.input_shape, requires_grad=True)
    feats = model.features(x, layers)
    assert list(feats) == layers
    assert all(f.shape[0] == 2 and torch.isfinite(f).all() for f in feats.values())
    if expected is not None:
        assert feats[FEATURE_SHAPES[name][0]].shape == (2, *expected)
    feats[layers[0]].sum().backward()  # features stay differentiable w.r.t. the input
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=f"unknown layer 'nope'.*{names[0]}"):
        model.features(x, ["nope"])


def test_features_last_layer_is_logits() -> None:
    model = create_model("resnet20").eval()
    x = torch.rand(2, 3, 32, 32)
    feats = model.features(x, ["linear", "pool"])
    torch.testing.assert_close(feats["linear"], model(x))
    torch.testing.assert_close(model.net.linear(feats["pool"].flatten(1)), model(x))
    with pytest.raises(ValueError, match="at least one"):
        model.features(x, [])


def test_shortcut_a_zero_pads_subsampled_channels() -> None:
    x = torch.randn(2, 16, 8, 8)
    out = ShortcutA(stride=2, extra_channels=16)(x)
    expected = torch.zeros(2, 32, 4, 4)
    expected[:, 8:24] = x[:, :, ::2, ::2]
    torch.testing.assert_close(out, expected)


def test_kwargs_num_classes_and_input_shape() -> None:
    model = create_model("resnet20", num_classes=7, input_shape=(1, 16, 16), mean=None, std=None)
    assert model(torch.rand(2, 1, 16, 16)).shape == (2, 7)
    assert model.input_shape == (1, 16, 16)
    assert torch.equal(model.mean, torch.zeros(1, 1, 1, 1))
    assert torch.equal(model.std, torch.ones(1, 1, 1, 1))
    vit = create_model("vit-tiny", num_classes=3, input_shape=(3, 16, 16), depth=2)
    assert vit(torch.rand(1, 3, 16, 16)).shape == (1, 3)
    assert model.arch_kwargs == {"input_shape": [1, 16, 16], "mean": None, "std": None}


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("vit-tiny", {"input_shape": (3, 30, 30)}, "divisible by patch_size"),
        ("vit-tiny", {"heads": 5}, "divisible by heads"),
        ("lenet5-mnist", {"input_shape": (1, 30, 30)}, "divisible by 4"),
        ("vgg11-cifar", {"input_shape": (3, 16, 16)}, "H, W >= 32"),
        ("resnet20", {"mean": (0.5, 0.5)}, "3 channels"),
        ("resnet20", {"std": (0.5, 0.0, 0.5)}, "positive"),
    ],
)
def test_bad_factory_arguments(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_model(name, **kwargs)


def test_vit_rejects_wrong_image_size() -> None:
    vit = create_model("vit-tiny", depth=1)
    with pytest.raises(ValueError, match="patch grid"):
        vit(torch.rand(1, 3, 64, 64))


def test_bad_num_classes() -> None:
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="num_classes"):
            create_model("small-cnn", num_classes=bad)
