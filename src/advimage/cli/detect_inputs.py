"""The images `advimage detect score` scores: PNG/JPEG files or saved adversarial tensors.

``advimage attack`` writes exact float32 tensors (``tensors/batch_*.safetensors`` with key
``x_adv``, see :mod:`advimage.eval.export`) and 8-bit PNGs for viewing. Scoring the tensors
judges exactly what the attack produced; PNGs are quantized to 1/255 steps, which itself
changes the noise signature (Hu, Yu et al., NeurIPS 2019, evaluate saved float tensors).
An attack folder is read through its manifest: exactly the images of its configuration, never
shards another configuration left behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from advimage.data.images import decode_image
from advimage.errors import CorruptFileError
from advimage.eval.export import load_adversarials

__all__ = ["IMAGE_SUFFIXES", "load_images"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
# Keys tried, in order, in a safetensors file: the attack's output first.
_TENSOR_KEYS = ("x_adv", "x", "images")


def _read_picture(path: Path, channels: int) -> torch.Tensor:
    arr = decode_image(path, "L" if channels == 1 else "RGB", None)  # (H, W, C) uint8
    return torch.from_numpy(arr.copy()).float().div_(255.0).permute(2, 0, 1)  # (C, H, W)


def _read_tensors(path: Path) -> torch.Tensor:
    if path.is_dir():
        return load_adversarials(path)["x_adv"]
    try:
        data = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise CorruptFileError(f"cannot read safetensors file {path}: "
                               f"{(str(err).splitlines() or [''])[0]}") from None
    for key in _TENSOR_KEYS:
        if key in data:
            return data[key]
    if len(data) == 1:
        return next(iter(data.values()))
    raise ValueError(
        f"{path} holds tensors {sorted(data)}; expected one of {', '.join(_TENSOR_KEYS)}"
    )


def load_images(
    paths: Sequence[str | Path], input_shape: tuple[int, int, int] | None = None
) -> tuple[torch.Tensor, list[str]]:
    """Load images to score -> ``(x (N, C, H, W) float32 in [0, 1], one name per image)``.

    Each path is a picture file (PNG/JPEG/BMP), a ``.safetensors`` file (key ``x_adv``, ``x``
    or ``images``, or its only tensor; ``(N, C, H, W)`` or one ``(C, H, W)`` image), or an
    ``advimage attack`` output folder. ``input_shape`` ``(C, H, W)`` fixes the channels
    pictures are converted to and is checked against every image.
    """
    if not paths:
        raise ValueError("no images given")
    channels = input_shape[0] if input_shape is not None else 3
    images: list[torch.Tensor] = []
    names: list[str] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ValueError(f"image file not found: {path}")
        if path.is_dir() or path.suffix.lower() == ".safetensors":
            t = _read_tensors(path).float()
            if t.dim() == 3:
                t = t.unsqueeze(0)
            if t.dim() != 4:
                raise ValueError(f"{path}: expected (N, C, H, W) images, got {tuple(t.shape)}")
            images.append(t)
            names.extend(f"{path}[{i}]" for i in range(len(t)))
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(_read_picture(path, channels).unsqueeze(0))
            names.append(str(path))
        else:
            raise ValueError(
                f"{path}: unsupported file type; give PNG/JPEG files, a .safetensors file or "
                "an `advimage attack` output folder"
            )
    shapes = {tuple(t.shape[1:]) for t in images}
    if input_shape is not None:
        bad = shapes - {tuple(input_shape)}
        if bad:
            raise ValueError(
                f"images of shape {sorted(bad)[0]} do not fit the model's input "
                f"{tuple(input_shape)}"
            )
    elif len(shapes) > 1:
        raise ValueError(f"images differ in shape: {sorted(shapes)}")
    return torch.cat(images), names
