"""Small CNNs for low-resolution grayscale digits.

``lenet5-mnist`` is exactly the LeNet5 variant shipped with advertorch (Ding et al., 2019,
"advertorch v0.1: An Adversarial Robustness Toolbox based on PyTorch"), whose clean and PGD
adversarially trained (Madry et al., 2018) MNIST weights serve as reference models.
``small-cnn`` is the same two-conv design scaled down for the 8x8 scikit-learn ``digits`` set,
small enough to train in seconds on a CPU for tests and tutorials.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from advimage.models.classifier import ImageClassifier
from advimage.models.factory import input_chw, register_model

__all__ = ["LeNet5", "SmallCNN"]


def _shape(input_shape: Sequence[int], multiple: int, what: str) -> tuple[int, int, int]:
    shape = input_chw(input_shape, what)
    if shape[1] % multiple or shape[2] % multiple:
        raise ValueError(f"{what} needs H and W divisible by {multiple}, got {shape[1:]}")
    return shape  # type: ignore[return-value]


class LeNet5(nn.Module):
    """advertorch's LeNet5: two 3x3 conv + max-pool stages, then a 200-unit hidden layer."""

    def __init__(self, num_classes: int = 10, input_shape: Sequence[int] = (1, 28, 28)) -> None:
        super().__init__()
        c, h, w = input_shape
        self.conv1 = nn.Conv2d(c, 32, 3, padding=1)
        self.relu1 = nn.ReLU()  # not in-place, so hooks on conv1 see pre-activation values
        self.maxpool1 = nn.MaxPool2d(2, 2)  # (B, 32, H/2, W/2)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.maxpool2 = nn.MaxPool2d(2, 2)  # (B, 64, H/4, W/4)
        self.linear1 = nn.Linear(64 * (h // 4) * (w // 4), 200)  # 3136 -> 200 for 28x28
        self.relu3 = nn.ReLU()
        self.linear2 = nn.Linear(200, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.maxpool1(self.relu1(self.conv1(x)))  # (B, 32, H/2, W/2)
        out = self.maxpool2(self.relu2(self.conv2(out)))  # (B, 64, H/4, W/4)
        out = self.relu3(self.linear1(out.flatten(1)))  # (B, 200)
        return self.linear2(out)  # (B, num_classes)


class SmallCNN(nn.Module):
    """conv 1->32, conv 32->64, 2x2 max-pool, fc 128, fc num_classes (for 8x8 digits)."""

    def __init__(self, num_classes: int = 10, input_shape: Sequence[int] = (1, 8, 8)) -> None:
        super().__init__()
        c, h, w = input_shape
        self.conv1 = nn.Conv2d(c, 32, 3, padding=1)  # (B, 32, H, W)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)  # (B, 64, H, W)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)  # (B, 64, H/2, W/2)
        self.fc1 = nn.Linear(64 * (h // 2) * (w // 2), 128)  # 1024 -> 128 for 8x8
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))  # (B, 64, H/2, W/2)
        return self.fc2(self.relu3(self.fc1(out.flatten(1))))  # (B, num_classes)


@register_model("lenet5-mnist")
def lenet5_mnist(
    num_classes: int = 10,
    *,
    input_shape: Sequence[int] = (1, 28, 28),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> ImageClassifier:
    """advertorch LeNet5 for MNIST; inputs in [0, 1] with no normalization by default."""
    shape = _shape(input_shape, 4, "lenet5-mnist")
    return ImageClassifier(
        LeNet5(num_classes, shape), mean, std, arch="lenet5-mnist",
        num_classes=num_classes, input_shape=shape,
    )


@register_model("small-cnn")
def small_cnn(
    num_classes: int = 10,
    *,
    input_shape: Sequence[int] = (1, 8, 8),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> ImageClassifier:
    """Small CNN for the 8x8 ``digits`` set; inputs in [0, 1] with no normalization by default."""
    shape = _shape(input_shape, 2, "small-cnn")
    return ImageClassifier(
        SmallCNN(num_classes, shape), mean, std, arch="small-cnn",
        num_classes=num_classes, input_shape=shape,
    )
