"""Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017): 60,000 train / 10,000 test 28x28 grey images
of clothing, in MNIST's IDX file layout (``data_root`` may hold the files, or ``raw/`` or
``FashionMNIST/raw/`` as torchvision lays them out). ``--download`` fetches Zalando's files.
"""

from __future__ import annotations

from pathlib import Path

from advimage.data.base import ImageDataset
from advimage.data.mnist import load_idx_dataset
from advimage.data.registry import register_dataset

__all__ = ["FASHION_MNIST_CLASSES", "load_fashion_mnist"]

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@register_dataset("fashion-mnist")
def load_fashion_mnist(
    split: str = "train", *, data_root: Path | None = None, image_size: int | None = None,
) -> ImageDataset:
    """Fashion-MNIST: 60,000 train / 10,000 test images, shape (1, 28, 28), 10 classes."""
    return load_idx_dataset("fashion-mnist", split, data_root, image_size,
                            classes=list(FASHION_MNIST_CLASSES), title="Fashion-MNIST",
                            torchvision_dir="FashionMNIST")
