"""Reading one image file safely: header probe, decompression-bomb guard, mode conversion,
resize of the shorter side + centre crop.

Every failure is a one-line :class:`~advimage.errors.CorruptFileError` naming the file.
Modes are converted explicitly so no channel is lost or mis-scaled: palette images (with or
without transparency) go through RGBA, 16-bit and 32-bit greyscale (``I;16``, ``I``, ``F``) are
rescaled to 8 bits instead of being clipped, CMYK JPEGs (Adobe's inverted ones included: PIL
undoes the inversion on load) convert through RGB, and RGBA/LA drop their alpha channel as
torchvision's ``ImageFolder`` loader does.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from advimage.errors import CorruptFileError

__all__ = ["bomb_warnings_silenced", "decode_image", "probe_image"]

# the errors PIL raises for non-image, truncated or damaged files
_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def _bomb_error(path: str | Path, size: tuple[int, int] | None = None) -> CorruptFileError:
    limit = Image.MAX_IMAGE_PIXELS
    pixels = f" ({size[0]}x{size[1]} = {size[0] * size[1]:,} pixels)" if size else ""
    return CorruptFileError(
        f"image {path} has more pixels than PIL's limit of {limit:,}{pixels}: a possible "
        "decompression bomb, refused (raise PIL.Image.MAX_IMAGE_PIXELS to accept it)")


def _check_bomb(path: str | Path, size: tuple[int, int]) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and size[0] * size[1] > limit:
        raise _bomb_error(path, size)


@contextmanager
def bomb_warnings_silenced() -> Iterator[None]:
    """Silence PIL's ``DecompressionBombWarning`` (the size check here refuses those images
    with a one-line error instead). Enter it in the calling thread around a thread pool:
    ``warnings.catch_warnings`` is not thread-safe, so the workers never enter it themselves."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _open(path: str | Path) -> Image.Image:
    """``Image.open`` with the decompression-bomb error as a one-line refusal."""
    try:
        return Image.open(path)
    except Image.DecompressionBombError:
        raise _bomb_error(path) from None


def probe_image(path: str | Path) -> tuple[int, int] | None:
    """``(width, height)`` of a readable image, ``None`` for a non-image or corrupt file.

    Raises:
        CorruptFileError: the image has more pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` (a
            decompression bomb is refused, never skipped silently nor decoded).
    """
    try:
        with _open(path) as im:
            size = im.size
            _check_bomb(path, size)
            im.verify()  # checks structure (PNG chunk CRCs, ...) without a full decode
        return size
    except CorruptFileError:
        raise
    except _READ_ERRORS:
        return None


def _to_mode(im: Image.Image, mode: str) -> Image.Image:
    """``im`` converted to ``"RGB"`` or ``"L"`` without clipping or losing colours."""
    if im.mode == mode:
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or float(arr.max(initial=0)) > 255 else 255.0
        if im.mode == "F" and float(arr.max(initial=0)) <= 1.0:
            top = 1.0  # float images in [0, 1]
        grey = np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        im = Image.fromarray(grey, mode="L")
        return im if mode == "L" else im.convert("RGB")
    if im.mode == "P":  # through RGBA: keeps the palette's transparency handling warning-free
        im = im.convert("RGBA")
    if im.mode not in ("RGB", "L", "1"):
        im = im.convert("RGB")  # RGBA, LA, CMYK, YCbCr, ...: drop alpha / convert colour space
    return im.convert(mode)


def _resize_crop(im: Image.Image, image_size: int) -> Image.Image:
    w, h = im.size
    scale = image_size / min(w, h)
    new_w, new_h = max(image_size, round(w * scale)), max(image_size, round(h * scale))
    if (new_w, new_h) != (w, h):
        im = im.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left = int(round((new_w - image_size) / 2.0))
    top = int(round((new_h - image_size) / 2.0))
    return im.crop((left, top, left + image_size, top + image_size))


def decode_image(path: str | Path, mode: str, image_size: int | None) -> np.ndarray:
    """Decode ``path`` to a ``(H, W, C)`` uint8 array in ``mode`` (``"RGB"`` or ``"L"``).

    Args:
        path: the image file.
        mode: ``"RGB"`` (3 channels) or ``"L"`` (1 channel).
        image_size: when given, the shorter side is resized to it (antialiased bilinear) and
            the centre square cropped ("Resize + CenterCrop").

    Raises:
        CorruptFileError: a truncated, damaged or non-image file, or a decompression bomb;
            the message names the file.
    """
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    try:
        with _open(path) as im:
            _check_bomb(path, im.size)
            out = _to_mode(im, mode)
            if image_size is not None:
                out = _resize_crop(out, image_size)
            arr = np.asarray(out, dtype=np.uint8)
    except CorruptFileError:
        raise
    except _READ_ERRORS as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CorruptFileError(f"cannot decode image {path}: {text}") from None
    return arr if arr.ndim == 3 else arr[:, :, None]  # (H, W, C)
