"""The dataset abstraction every advimage component iterates over.

An :class:`ImageDataset` is a labelled list of images with a known class list and image shape.
Images are produced in batches by a *loader* (source indices -> float images in [0, 1]), so a
dataset can sit on an in-memory ``uint8`` array (CIFAR-10, MNIST, digits: four times smaller than
float32, converted per batch) or decode files lazily (image folders). Subsets are views that share
the loader. Batching is deterministic: the same ``seed`` always yields the same order and the same
augmentation draws.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ImageDataset", "Loader", "Transform", "uint8_loader"]

# (source indices (B,) int64) -> images (B, C, H, W) float32 in [0, 1]
Loader = Callable[[np.ndarray], torch.Tensor]
# (images (B, C, H, W), generator) -> augmented images (B, C, H, W)
Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def uint8_loader(
    array: np.ndarray, *, scale: float = 255.0, channels_last: bool = True,
    image_size: int | None = None,
) -> Loader:
    """Build a loader that slices an in-memory integer array and converts only that batch.

    Args:
        array: ``(N, H, W, C)`` when ``channels_last`` else ``(N, C, H, W)``; ``(N, H, W)``
            is read as one channel. Kept as is (never expanded to float32 as a whole).
        scale: the value that maps to 1.0 (255 for 8-bit images, 16 for scikit-learn digits).
        channels_last: layout of ``array``.
        image_size: when given and different from the native size, each batch is resized
            (bilinear, antialiased) to ``image_size`` x ``image_size``.
    """
    if array.ndim == 3:
        array = array[:, None] if not channels_last else array[..., None]
    if array.ndim != 4:
        raise ValueError(f"image array must have 3 or 4 dims, got shape {array.shape}")

    def load(idx: np.ndarray) -> torch.Tensor:
        chunk = torch.from_numpy(np.ascontiguousarray(array[idx]))
        if channels_last:
            chunk = chunk.permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
        x = chunk.to(torch.float32).div_(scale).contiguous()  # (B, C, H, W) in [0, 1]
        if image_size is not None and tuple(x.shape[-2:]) != (image_size, image_size):
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                              align_corners=False, antialias=True).clamp_(0.0, 1.0)
        return x

    return load


class ImageDataset:
    """A labelled image set: ``ds[i] -> (image (C,H,W) float32 in [0,1], label)``.

    Args:
        name: registry name (``"cifar10"``, ...), kept for logs and ``standard_augmentation``.
        split: ``"train"`` or ``"test"``.
        classes: class names; label ``k`` means ``classes[k]``.
        labels: ``(N,)`` integer labels of the *source* samples.
        image_shape: ``(C, H, W)`` of every image the loader returns.
        loader: maps source indices to a float batch; see :data:`Loader`.
        indices: source indices this view exposes (all when ``None``).
        label_mapping: for trees of class folders, ``{folder: label}`` as resolved.
        label_source: how the labels were obtained: ``"dataset"`` (the dataset's own labels),
            ``"name"`` (folders matched to the model's class names), ``"class-map"`` (an
            explicit map; ``"class-map+name"`` when both) or ``"position"`` (sorted folders).
    """

    def __init__(
        self,
        name: str,
        split: str,
        classes: Sequence[str],
        labels: torch.Tensor | np.ndarray | Sequence[int],
        image_shape: tuple[int, int, int],
        loader: Loader,
        indices: np.ndarray | None = None,
        *,
        label_mapping: dict[str, int] | None = None,
        label_source: str = "dataset",
    ) -> None:
        self.name = name
        self.label_mapping = None if label_mapping is None else dict(label_mapping)
        self.label_source = str(label_source)
        self.split = split
        self.classes = [str(c) for c in classes]
        self.image_shape = tuple(int(s) for s in image_shape)
        if len(self.image_shape) != 3:
            raise ValueError(f"image_shape must be (C, H, W), got {image_shape}")
        self._all_labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64).reshape(-1)
        self._loader = loader
        n_src = self._all_labels.numel()
        if indices is None:
            self._indices = np.arange(n_src, dtype=np.int64)
        else:
            self._indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if self._indices.size and (self._indices.min() < 0 or self._indices.max() >= n_src):
            raise ValueError(f"subset indices must lie in [0, {n_src}), got "
                             f"[{self._indices.min()}, {self._indices.max()}]")
        self._labels = self._all_labels[torch.from_numpy(self._indices)]

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_tensors(
        cls, x: torch.Tensor, y: torch.Tensor, classes: Sequence[str] | None = None,
        *, name: str = "tensors", split: str = "test",
    ) -> ImageDataset:
        """Wrap in-memory images ``x`` (N, C, H, W) in [0, 1] and labels ``y`` (N,)."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
            raise ValueError("x must be a floating (N, C, H, W) tensor in [0, 1]")
        y = torch.as_tensor(y)
        if y.shape != (x.shape[0],):
            raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        if classes is None:
            classes = [str(k) for k in range(int(y.max()) + 1 if y.numel() else 0)]
        data = x.detach().to("cpu", torch.float32)

        def load(idx: np.ndarray) -> torch.Tensor:
            return data[torch.from_numpy(idx)]

        return cls(name, split, classes, y.cpu(), tuple(x.shape[1:]), load)

    # ------------------------------------------------------------------ basic protocol
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def labels(self) -> torch.Tensor:
        """``(N,)`` int64 labels of this view (no image decoding)."""
        return self._labels

    def __len__(self) -> int:
        return int(self._indices.size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        n = len(self)
        try:
            i = operator.index(i)  # ints, numpy ints, 0-d integer tensors
        except TypeError:
            raise TypeError(f"dataset index must be an int, got {type(i).__name__}") from None
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {self.name}/{self.split} of size {n}")
        i %= n
        x = self._loader(self._indices[i : i + 1])[0]  # (C, H, W)
        return x, int(self._labels[i])

    def describe(self) -> dict[str, object]:
        """What a run record keeps about this data: name, split, size, shape, classes and how
        the labels were obtained (``label_source``, ``label_mapping``); JSON-serializable."""
        return {"name": self.name, "split": self.split, "n": len(self),
                "image_shape": list(self.image_shape), "num_classes": self.num_classes,
                "label_source": self.label_source, "label_mapping": self.label_mapping}

    def __repr__(self) -> str:
        return (f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"classes={self.num_classes}, image_shape={self.image_shape})")

    # ------------------------------------------------------------------ batching
    def _order(self, shuffle: bool, generator: torch.Generator, limit: int | None) -> np.ndarray:
        n = len(self)
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 0:
                raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
            n = min(n, int(limit))
        pos = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        return pos.numpy()

    def batches(
        self,
        batch_size: int = 256,
        *,
        shuffle: bool = False,
        seed: int = 0,
        transform: Transform | None = None,
        limit: int | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x (B,C,H,W) float32 in [0,1], y (B,) int64)`` batches.

        Args:
            batch_size: images per batch (the last one may be smaller unless ``drop_last``).
            shuffle: permute the samples with a ``torch.Generator`` seeded by ``seed``.
            seed: same seed -> same order and same augmentation draws.
            transform: ``(x, generator) -> x`` applied to each batch (augmentation).
            limit: keep only the first ``limit`` samples (deterministic order) before shuffling.
            drop_last: skip a final batch smaller than ``batch_size``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        gen = torch.Generator().manual_seed(int(seed))
        order = self._order(shuffle, gen, limit)  # positions in this view
        for start in range(0, order.size, batch_size):
            pos = order[start : start + batch_size]
            if drop_last and pos.size < batch_size:
                break
            x = self._loader(self._indices[pos])  # (B, C, H, W)
            y = self._labels[torch.from_numpy(pos)]  # (B,)
            if transform is not None:
                x = transform(x, gen)
            yield x, y

    def tensors(self, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole view (or its first ``limit`` samples) as ``(x (N,C,H,W), y (N,))``."""
        order = self._order(False, torch.Generator(), limit)
        if order.size == 0:
            return (torch.zeros((0, *self.image_shape)), torch.zeros(0, dtype=torch.int64))
        return self._loader(self._indices[order]), self._labels[torch.from_numpy(order)].clone()

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ImageDataset:
        """A view on ``indices`` (positions in this dataset); same classes, shared storage."""
        if isinstance(indices, torch.Tensor):
            indices = indices.cpu().numpy()
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"boolean subset mask must have shape ({len(self)},), "
                                 f"got {idx.shape}")
            idx = np.flatnonzero(idx)
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"subset indices must be integers, got dtype {idx.dtype}")
        idx = idx.astype(np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise ValueError(f"subset indices must lie in [0, {n}), got "
                             f"[{idx.min()}, {idx.max()}]")
        idx = idx % n if n else idx
        return ImageDataset(self.name, self.split, self.classes, self._all_labels,
                            self.image_shape, self._loader, indices=self._indices[idx],
                            label_mapping=self.label_mapping, label_source=self.label_source)

    def balanced(self, n: int) -> ImageDataset:
        """The first ``n`` samples taken round-robin over classes (deterministic, class-balanced).

        CIFAR-10's deterministic order is sorted by class, so "the first 1,000 images" would be
        one class; ``balanced(1000)`` takes the first 100 of each class instead, interleaved
        (position ``i`` holds class ``i % K`` while every class has images left).
        """
        if n < 1:
            raise ValueError(f"subset size must be >= 1, got {n}")
        labels = self.labels.numpy()
        rank = np.empty(len(labels), dtype=np.int64)  # position of each sample within its class
        for k in np.unique(labels):
            members = np.flatnonzero(labels == k)
            rank[members] = np.arange(len(members))
        order = np.lexsort((labels, rank))  # by rank, then class
        return self.subset(order[: min(n, len(order))])
