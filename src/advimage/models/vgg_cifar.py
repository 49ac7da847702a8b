"""VGG-11/19 for CIFAR (Simonyan & Zisserman, 2015, "Very Deep Convolutional Networks for
Large-Scale Image Recognition"), optionally with batch norm (Ioffe & Szegedy, 2015).

The CIFAR adaptation keeps the 3x3 conv stacks and five 2x2 max-pools (32x32 -> 1x1) but
replaces the three 4096-unit FC layers by one linear classifier on the 512 pooled features,
as is standard for 32x32 inputs. Conv layers are reachable as features ``features.<i>``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from advimage.models.classifier import ImageClassifier
from advimage.models.factory import input_chw, register_model
from advimage.models.resnet18_cifar import CIFAR_MEAN, CIFAR_STD

__all__ = ["VGG", "VGG_CONFIGS"]

# Output channels per conv layer; "M" is a 2x2 max-pool (configurations A and E of the paper).
VGG_CONFIGS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
         512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """CIFAR VGG: conv(-BN)-ReLU stacks, global average pool, linear classifier on 512 features."""

    def __init__(
        self, depth: int, num_classes: int = 10, in_channels: int = 3, batch_norm: bool = False
    ) -> None:
        super().__init__()
        if depth not in VGG_CONFIGS:
            raise ValueError(f"VGG depth must be one of {sorted(VGG_CONFIGS)}, got {depth}")
        layers: list[nn.Module] = []
        channels = in_channels
        for item in VGG_CONFIGS[depth]:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))  # halves H and W
                continue
            out = int(item)
            layers.append(nn.Conv2d(channels, out, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU())  # not in-place: feature hooks must see unmodified outputs
            channels = out
        self.features = nn.Sequential(*layers)  # (B, 512, H/32, W/32)
        self.pool = nn.AdaptiveAvgPool2d(1)  # (B, 512, 1, 1); identity for 32x32 inputs
        self.classifier = nn.Linear(512, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):  # He et al. (2015) init for ReLU networks
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.pool(self.features(x)).flatten(1)  # (B, 512)
        return self.classifier(out)  # (B, num_classes)


def _register(depth: int, batch_norm: bool) -> None:
    name = f"vgg{depth}{'-bn' if batch_norm else ''}-cifar"

    def factory(
        num_classes: int = 10,
        *,
        input_shape: Sequence[int] = (3, 32, 32),
        mean: Sequence[float] | None = CIFAR_MEAN,
        std: Sequence[float] | None = CIFAR_STD,
    ) -> ImageClassifier:
        shape = input_chw(input_shape, name, min_side=32)
        net = VGG(depth, num_classes, shape[0], batch_norm)
        return ImageClassifier(
            net, mean, std, arch=name, num_classes=num_classes, input_shape=shape  # type: ignore[arg-type]
        )

    factory.__name__ = name.replace("-", "_")
    factory.__doc__ = f"CIFAR VGG-{depth}{' with batch norm' if batch_norm else ''}."
    register_model(name, factory)


for _depth in (11, 19):
    for _bn in (False, True):
        _register(_depth, _bn)
