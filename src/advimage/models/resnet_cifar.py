"""CIFAR ResNet-20/32/44/56 (He et al., 2016, "Deep Residual Learning for Image Recognition").

The 6n+2-layer CIFAR variant of Sec. 4.2: a 3x3 stem, three stages of n basic blocks with
16/32/64 channels, global average pooling and a linear layer. Shortcuts are "option A"
(stride-2 subsampling plus zero-padded channels, no parameters). Module names follow the
widely used akamaster/pytorch_resnet_cifar10 checkpoints (conv1, bn1, layer1.0.conv1, ...,
linear) so those reference weights load directly through ``import_reference``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from advimage.models.classifier import ImageClassifier
from advimage.models.factory import input_chw, register_model

__all__ = ["CifarResNet", "IMAGENET_MEAN", "IMAGENET_STD"]

# The reference models were trained on CIFAR-10 normalized with the ImageNet statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ShortcutA(nn.Module):
    """Parameter-free "option A" shortcut: subsample by ``stride``, zero-pad the new channels."""

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad = extra_channels // 2  # zeros added on each side of the channel axis

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]  # (B, C, H/s, W/s)
        return F.pad(x, (0, 0, 0, 0, self.pad, self.pad))  # (B, C + 2*pad, H/s, W/s)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity or option-A shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = ShortcutA(stride, planes - in_planes)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images; ``depth`` in {20, 32, 44, 56, 110, ...}."""

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
        n = (depth - 2) // 6  # basic blocks per stage
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, n, stride=1)  # (B, 16, H, W)
        self.layer2 = self._stage(16, 32, n, stride=2)  # (B, 32, H/2, W/2)
        self.layer3 = self._stage(32, 64, n, stride=2)  # (B, 64, H/4, W/4)
        self.pool = nn.AdaptiveAvgPool2d(1)  # (B, 64, 1, 1)
        self.linear = nn.Linear(64, num_classes)
        for module in self.modules():  # He et al. (2015) init, as in the paper
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # (B, 16, H, W)
        out = self.layer3(self.layer2(self.layer1(out)))  # (B, 64, H/4, W/4)
        return self.linear(self.pool(out).flatten(1))  # (B, num_classes)


def _build(
    depth: int,
    num_classes: int,
    input_shape: Sequence[int],
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> ImageClassifier:
    shape = input_chw(input_shape, f"resnet{depth}", min_side=4)
    net = CifarResNet(depth, num_classes, in_channels=shape[0])
    return ImageClassifier(
        net, mean, std, arch=f"resnet{depth}", num_classes=num_classes, input_shape=shape
    )


def _register(depth: int) -> None:
    def factory(
        num_classes: int = 10,
        *,
        input_shape: Sequence[int] = (3, 32, 32),
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
    ) -> ImageClassifier:
        return _build(depth, num_classes, input_shape, mean, std)

    factory.__name__ = f"resnet{depth}"
    factory.__doc__ = f"CIFAR ResNet-{depth} (He et al., 2016), option-A shortcuts."
    register_model(f"resnet{depth}", factory)


for _depth in (20, 32, 44, 56):
    _register(_depth)
