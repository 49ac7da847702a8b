"""ResNet-18 for CIFAR (He et al., 2016, "Deep Residual Learning for Image Recognition").

The ImageNet ResNet-18 (four stages of two basic blocks, 64-512 channels, projection
shortcuts) with the CIFAR adaptation common in adversarial-robustness work (e.g. Madry et al.,
2018; Rice et al., 2020): a 3x3 stride-1 stem and no max-pool, so 32x32 inputs keep enough
resolution for the last stage (4x4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from advimage.models.classifier import ImageClassifier
from advimage.models.factory import input_chw, register_model

__all__ = ["CIFAR_MEAN", "CIFAR_STD", "ResNet18"]

# CIFAR-10 training-set channel statistics.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class BasicBlock(nn.Module):
    """Basic block with a 1x1 conv + BN projection shortcut when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 with a 3x3 stem and no max-pool (CIFAR variant)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._stage(64, 64, stride=1)  # (B, 64, H, W)
        self.layer2 = self._stage(64, 128, stride=2)  # (B, 128, H/2, W/2)
        self.layer3 = self._stage(128, 256, stride=2)  # (B, 256, H/4, W/4)
        self.layer4 = self._stage(256, 512, stride=2)  # (B, 512, H/8, W/8)
        self.pool = nn.AdaptiveAvgPool2d(1)  # (B, 512, 1, 1)
        self.linear = nn.Linear(512, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):  # He et al. (2015) init for ReLU networks
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _stage(in_planes: int, planes: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # (B, 64, H, W)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))  # (B, 512, H/8, W/8)
        return self.linear(self.pool(out).flatten(1))  # (B, num_classes)


@register_model("resnet18-cifar")
def resnet18_cifar(
    num_classes: int = 10,
    *,
    input_shape: Sequence[int] = (3, 32, 32),
    mean: Sequence[float] | None = CIFAR_MEAN,
    std: Sequence[float] | None = CIFAR_STD,
) -> ImageClassifier:
    """ResNet-18, CIFAR stem; CIFAR-10 normalization by default."""
    shape = input_chw(input_shape, "resnet18-cifar", min_side=8)
    return ImageClassifier(
        ResNet18(num_classes, shape[0]), mean, std, arch="resnet18-cifar",
        num_classes=num_classes, input_shape=shape,  # type: ignore[arg-type]
    )
