"""advimage.data: datasets (``digits``, ``cifar10``, ``cifar100``, ``mnist``, ``fashion-mnist``,
``svhn``, ``folder``, ``imagenet``, ``imagenette``; the five public ones downloadable with
``load_dataset(..., download=True)``) and augmentations.

``load_dataset(name, split, data_root=...)`` returns an :class:`ImageDataset` whose ``batches``
yield float32 images in [0, 1]; augmentations are batched callables ``aug(x, generator)``.
"""

from advimage.data import cifar10 as _cifar10  # noqa: F401  (registers "cifar10")
from advimage.data import cifar100 as _cifar100  # noqa: F401  (registers "cifar100")
from advimage.data import digits as _digits  # noqa: F401  (registers "digits")
from advimage.data import fashion_mnist as _fashion  # noqa: F401  (registers "fashion-mnist")
from advimage.data import folder as _folder  # noqa: F401  (registers "folder")
from advimage.data import imagenet as _imagenet  # noqa: F401  (registers imagenet[te])
from advimage.data import mnist as _mnist  # noqa: F401  (registers "mnist")
from advimage.data import svhn as _svhn  # noqa: F401  (registers "svhn")
from advimage.data.augment import (
    ColorJitter,
    Compose,
    HorizontalFlip,
    RandomCrop,
    standard_augmentation,
)
from advimage.data.base import ImageDataset
from advimage.data.registry import list_datasets, load_dataset, register_dataset

__all__ = [
    "ColorJitter",
    "Compose",
    "HorizontalFlip",
    "ImageDataset",
    "RandomCrop",
    "list_datasets",
    "load_dataset",
    "register_dataset",
    "standard_augmentation",
]
