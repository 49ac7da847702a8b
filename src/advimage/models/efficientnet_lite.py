"""EfficientNet-Lite0 (Tan & Le, 2019, "EfficientNet: Rethinking Model Scaling for CNNs").

The Lite variant Google released for mobile accelerators: the EfficientNet-B0 layout of
mobile inverted bottleneck (MBConv) blocks with ReLU6 instead of Swish and no
squeeze-and-excitation; stem (32 channels) and head (1280) are not scaled. Convolutions use
TensorFlow's "SAME" padding: a strided convolution pads the extra row/column at the bottom/right
only, which matters for the converted TF weights. BatchNorm has TF's eps 1e-3 and momentum 0.01.

Module names follow the PyPI package ``efficientnet-lite-pytorch`` 0.1.0 (``_conv_stem``,
``_bn0``, ``_blocks.N._expand_conv`` ..., ``_conv_head``, ``_bn1``, ``_fc``), so its converted
ImageNet weights (e.g. ``efficientnet-lite0-57934424.pth``) load through ``import_reference``.
Those weights expect RGB normalized with mean = std = 0.5, i.e. TF-Lite's (x*255 - 127.5)/127.5,
which the :class:`ImageClassifier` wrapper applies to images in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advimage.models.classifier import ImageClassifier
from advimage.models.factory import input_chw, register_model
from advimage.models.imagenet_classes import NUM_IMAGENET_CLASSES, imagenet_class_names

__all__ = ["EfficientNetLite", "LITE0_STAGES", "SameConv2d"]

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage, Lite0
# (width and depth coefficient 1.0); from the TF reference's efficientnet_lite_builder.
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN_EPS = 1e-3  # TF's batch_norm_epsilon
_BN_MOMENTUM = 0.01  # 1 - TF's 0.99


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding ``(before, after)`` of one axis: output ``ceil(size / stride)``."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow 'SAME' padding for any input size (no bias by default).

    Stride 1 pads symmetrically inside the convolution; a larger stride pads per input size,
    the odd extra pixel at the bottom/right as TF does.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = False) -> None:
        padding = (kernel_size - 1) // 2 if stride == 1 else 0
        super().__init__(in_channels, out_channels, kernel_size, stride, padding,
                         groups=groups, bias=bias)
        self._tf_pad = stride > 1 and kernel_size > 1

    def forward(self, x: Tensor) -> Tensor:
        if self._tf_pad:
            k, s = self.kernel_size[0], self.stride[0]
            top, bottom = _same_pad(x.shape[-2], k, s)
            left, right = _same_pad(x.shape[-1], k, s)
            x = F.pad(x, (left, right, top, bottom))  # (B, C, H + pad, W + pad)
        return super().forward(x)


def _drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth ("drop connect"): zero whole samples of a residual branch in training."""
    if not training or rate <= 0.0:
        return x
    keep = 1.0 - rate
    mask = torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device).add_(keep).floor_()
    return x / keep * mask


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; ReLU6; identity skip when the
    shape is kept (stride 1, same channels)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch
        self.drop_rate = float(drop_rate)

    def forward(self, x: Tensor) -> Tensor:
        out = x
        if self.has_expand:
            out = F.relu6(self._bn0(self._expand_conv(out)))  # (B, mid, H, W)
        out = F.relu6(self._bn1(self._depthwise_conv(out)))  # (B, mid, H/s, W/s)
        out = self._bn2(self._project_conv(out))  # (B, out, H/s, W/s), linear bottleneck
        if self.residual:
            out = _drop_path(out, self.drop_rate, self.training) + x
        return out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite backbone and classifier; logits ``(B, num_classes)``.

    Args:
        num_classes: logits of ``_fc``.
        stages: per stage ``(repeats, kernel, stride, expand, in, out)``; Lite0 by default.
        in_channels: image channels.
        dropout: dropout before ``_fc`` in training (0.2 for Lite0).
        drop_connect: largest stochastic-depth rate, scaled by block position (0.2).
    """

    def __init__(self, num_classes: int = NUM_IMAGENET_CLASSES,
                 stages: Sequence[tuple[int, int, int, int, int, int]] = LITE0_STAGES,
                 in_channels: int = 3, dropout: float = 0.2, drop_connect: float = 0.2) -> None:
        super().__init__()
        stem, head = 32, 1280
        self._conv_stem = SameConv2d(in_channels, stem, 3, stride=2)
        self._bn0 = _bn(stem)
        specs = []
        for repeats, kernel, stride, expand, cin, cout in stages:
            specs.append((cin, cout, kernel, stride, expand))
            specs += [(cout, cout, kernel, 1, expand)] * (repeats - 1)
        self._blocks = nn.ModuleList(
            MBConvBlock(*spec, drop_rate=drop_connect * i / len(specs))
            for i, spec in enumerate(specs)
        )
        self._conv_head = nn.Conv2d(specs[-1][1], head, 1, bias=False)
        self._bn1 = _bn(head)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))  # (B, 32, H/2, W/2)
        for block in self._blocks:
            x = block(x)  # (B, 320, H/32, W/32) after the last
        x = F.relu6(self._bn1(self._conv_head(x)))  # (B, 1280, H/32, W/32)
        x = self._avg_pooling(x).flatten(1)  # (B, 1280)
        return self._fc(self._dropout(x))  # (B, num_classes)


@register_model("efficientnet-lite0")
def efficientnet_lite0(
    num_classes: int = NUM_IMAGENET_CLASSES,
    *,
    input_shape: Sequence[int] = (3, 224, 224),
    mean: Sequence[float] | None = (0.5, 0.5, 0.5),
    std: Sequence[float] | None = (0.5, 0.5, 0.5),
    dropout: float = 0.2,
    drop_connect: float = 0.2,
) -> ImageClassifier:
    """EfficientNet-Lite0 (4.7 M parameters at 1000 classes), inputs in [0, 1], mean=std=0.5.

    A 1000-class model carries the ImageNet-1k class names.
    """
    shape = input_chw(input_shape, "efficientnet-lite0", min_side=32)
    net = EfficientNetLite(num_classes, in_channels=shape[0], dropout=dropout,
                           drop_connect=drop_connect)
    classes = imagenet_class_names() if num_classes == NUM_IMAGENET_CLASSES else None
    return ImageClassifier(net, mean, std, arch="efficientnet-lite0", num_classes=num_classes,
                           input_shape=shape, classes=classes)
