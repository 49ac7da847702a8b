"""advimage.data: datasets (``digits``, ``cifar10``, ``mnist``, ``folder``) and augmentations.

``load_dataset(name, split, data_root=...)`` returns an :class:`ImageDataset` whose ``batches``
yield float32 images in [0, 1]; augmentations are batched callables ``aug(x, generator)``.
"""

from advimage.data import cifar10 as _cifar10  # noqa: F401  (registers "cifar10")
from advimage.data import digits as _digits  # noqa: F401  (registers "digits")
from advimage.data import folder as _folder  # noqa: F401  (registers "folder")
from advimage.data import imagenet as _imagenet  # noqa: F401  (registers imagenet[te])
from advimage.data import mnist as _mnist  # noqa: F401  (registers "mnist")
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
