"""SVHN (Netzer et al., 2011), cropped digits: 73,257 train / 26,032 test 32x32 RGB images.

Read from the official MATLAB files ``{train,test}_32x32.mat`` in ``data_root`` (``X``: 32x32x3xN
uint8, ``y``: N labels 1..10, where 10 is the digit 0; mapped to classes "0".."9" as torchvision
does). ``scipy`` (installed with scikit-learn, a dependency) is imported only when SVHN is loaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from advimage.data.base import ImageDataset, uint8_loader
from advimage.data.registry import register_dataset

__all__ = ["load_svhn"]

_SIDE = 32


def _missing(root: Path | None) -> ValueError:
    return ValueError(
        f"SVHN not found at {root if root is not None else 'data_root'}: pass data_root= "
        "pointing at a folder holding train_32x32.mat and test_32x32.mat, or add --download")


def _read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # pragma: no cover - scipy ships with the dependencies
        raise ValueError(f"reading {path} needs scipy (pip install scipy): {exc}") from None
    try:
        doc = loadmat(path)
    except (OSError, ValueError, TypeError, KeyError, EOFError) as exc:
        raise ValueError(f"cannot read SVHN file {path}: {exc}") from None
    x, y = doc.get("X"), doc.get("y")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 \
            or x.shape[:3] != (_SIDE, _SIDE, 3):
        raise ValueError(f"{path}: 'X' must be a uint8 array of shape (32, 32, 3, N)")
    labels = np.asarray(y if y is not None else [], dtype=np.int64).reshape(-1)
    if labels.shape != (x.shape[3],) or (labels.size and (labels.min() < 1
                                                          or labels.max() > 10)):
        raise ValueError(f"{path}: 'y' must be {x.shape[3]} labels in 1..10")
    images = np.ascontiguousarray(x.transpose(3, 0, 1, 2))  # (N, 32, 32, 3)
    return images, labels % 10  # label 10 is the digit 0


@register_dataset("svhn")
def load_svhn(
    split: str = "train", *, data_root: Path | None = None, image_size: int | None = None,
) -> ImageDataset:
    """SVHN cropped digits: shape (3, 32, 32), classes "0".."9"."""
    if data_root is None:
        raise _missing(None)
    path = Path(data_root) / f"{split}_32x32.mat"
    if not path.is_file():
        raise _missing(Path(data_root))
    images, labels = _read_mat(path)
    side = image_size or _SIDE
    loader = uint8_loader(images, scale=255.0, channels_last=True, image_size=image_size)
    return ImageDataset("svhn", split, [str(d) for d in range(10)], labels, (3, side, side),
                        loader)
