"""register_model / create_model / list_models and wrap_model on user modules."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from advimage.models import ImageClassifier, create_model, list_models, register_model, wrap_model
from advimage.models.factory import MODELS


@pytest.fixture
def scratch_names():
    """Names a test registers; removed afterwards so other tests see only the built-ins."""
    names: list[str] = []
    yield names
    for name in names:
        MODELS._items.pop(name, None)  # no public unregister: test-only cleanup


class UserNet(nn.Module):
    """A user's own network: logits from normalized images."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).relu().mean(dim=(2, 3)))


def test_list_models_sorted_and_complete() -> None:
    names = list_models()
    assert names == sorted(names)
    for name in ("small-cnn", "lenet5-mnist", "resnet20", "resnet32", "resnet44", "resnet56",
                 "resnet18-cifar", "vgg11-cifar", "vgg11-bn-cifar", "vgg19-cifar",
                 "vgg19-bn-cifar", "vit-tiny"):
        assert name in names


def test_register_and_create_user_model(scratch_names) -> None:
    scratch_names.append("test-usernet-registry")
    @register_model("test-usernet-registry")
    def factory(num_classes: int = 10, *, width: int = 8) -> ImageClassifier:
        return wrap_model(UserNet(num_classes), num_classes=num_classes, input_shape=(3, 8, 8))

    model = create_model("Test-UserNet-Registry", num_classes=3, width=4)  # case-insensitive
    assert model.arch == "test-usernet-registry" and model.arch_kwargs == {"width": 4}
    assert model(torch.rand(2, 3, 8, 8)).shape == (2, 3)
    assert "test-usernet-registry" in list_models()
    with pytest.raises(ValueError, match="non-empty"):
        register_model("  ")
    with pytest.raises(ValueError, match="already registered"):
        register_model("test-usernet-registry")(factory)
    with pytest.raises(ValueError, match="already registered"):
        register_model("resnet20", factory)


def test_factory_must_return_image_classifier(scratch_names) -> None:
    scratch_names.append("test-bad-factory")
    register_model("test-bad-factory", lambda num_classes, **kw: nn.Linear(2, num_classes))
    with pytest.raises(ValueError, match="expected ImageClassifier"):
        create_model("test-bad-factory")


def test_unknown_model_lists_names() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet99'.*resnet20.*vit-tiny"):
        create_model("resnet99")


def test_kwargs_must_be_json() -> None:
    with pytest.raises(ValueError, match="JSON-serializable"):
        create_model("resnet20", mean=torch.zeros(3))


def test_wrap_model_infers_num_classes_and_normalizes() -> None:
    net = UserNet(num_classes=4).train()
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    model = wrap_model(net, mean, std, input_shape=(3, 8, 8), classes=["a", "b", "c", "d"])
    assert isinstance(model, ImageClassifier)
    assert model.num_classes == 4 and model.arch == "custom" and model.input_shape == (3, 8, 8)
    assert net.training  # the dummy forward restored the train flag
    x = torch.rand(2, 3, 8, 8)
    expected = net((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    torch.testing.assert_close(model(x), expected)
    assert model.layer_names() == ["conv", "head"]
    assert model.features(x, ["conv"])["conv"].shape == (2, 8, 8, 8)
    assert set(model.state_dict()) == {"net.conv.weight", "net.conv.bias", "net.head.weight",
                                       "net.head.bias", "mean", "std"}
    assert wrap_model(model) is model


def test_wrap_model_defaults() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = wrap_model(UserNet(num_classes=6))
    assert model.input_shape == (3, 32, 32) and model.num_classes == 6
    assert any("input_shape" in str(w.message) for w in caught)
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(model(x), model.net(x))  # no normalization: identity buffers


def test_wrap_model_errors() -> None:
    with pytest.raises(ValueError, match="nn.Module"):
        wrap_model(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dummy forward"):
        wrap_model(UserNet(), input_shape=(1, 8, 8))  # wrong channel count for the conv
    with pytest.raises(ValueError, match="2 values but the input has 3"):
        wrap_model(UserNet(), (0.5, 0.5), (1.0, 1.0), input_shape=(3, 8, 8))
    with pytest.raises(ValueError, match="classes has 2 names"):
        wrap_model(UserNet(), num_classes=4, input_shape=(3, 8, 8), classes=["a", "b"])
    with pytest.raises(ValueError, match=r"\(B, num_classes\)"):
        wrap_model(nn.Conv2d(3, 3, 1), input_shape=(3, 4, 4))
