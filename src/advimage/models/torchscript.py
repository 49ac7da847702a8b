"""TorchScript classifiers (``torchscript:PATH``): a ``torch.jit.save`` archive plus a sidecar.

Loading TorchScript **runs the file's code** when the model is called, so it is the user's
explicit choice: only the ``torchscript:`` prefix selects it, and a pickled ``.pt`` is never
taken for one. A TorchScript file does not say what its input looks like, so the sidecar
``PATH.json`` (e.g. ``model.pt.json`` next to ``model.pt``) is required::

    {"input_shape": [3, 224, 224], "mean": [0.485, 0.456, 0.406],
     "std": [0.229, 0.224, 0.225], "classes": ["tench", "goldfish", ...]}

``mean``/``std`` are per channel for images in [0, 1] (the model receives ``(x - mean) / std``);
``classes`` may be replaced by ``"num_classes": K`` for a model without class names. The network
must return logits ``(B, K)``; one forward on a blank image checks that at load time.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from advimage.errors import CorruptFileError, UserInputError
from advimage.jsonfile import read_json_object
from advimage.models.classifier import ImageClassifier
from advimage.models.safe_files import check_file

__all__ = ["TORCHSCRIPT_PREFIX", "load_torchscript", "sidecar_path"]

TORCHSCRIPT_PREFIX = "torchscript:"


def sidecar_path(path: Path) -> Path:
    """The sidecar of a TorchScript file: its full name plus ``.json``."""
    return path.with_name(path.name + ".json")


def _read_sidecar(side: Path) -> tuple[tuple[int, int, int], list, list, list | None, int | None]:
    if not side.is_file():
        raise UserInputError(f"TorchScript model needs the sidecar {side} giving input_shape, "
                             "mean, std and classes (see `advimage attack --help`)")
    data = read_json_object(side)
    missing = [k for k in ("input_shape", "mean", "std") if k not in data]
    if missing or ("classes" not in data and "num_classes" not in data):
        raise CorruptFileError(f"{side}: missing {(missing or ['classes'])[0]!r}; the sidecar "
                               "needs input_shape, mean, std and classes (or num_classes)")
    shape = data["input_shape"]
    if not (isinstance(shape, list) and len(shape) == 3
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
        raise CorruptFileError(f"{side}: input_shape must be [C, H, W], positive, got {shape!r}")
    classes = data.get("classes")
    if classes is not None and (isinstance(classes, str) or not isinstance(classes, list)):
        raise CorruptFileError(f"{side}: classes must be a list of names")
    num = data.get("num_classes")
    return tuple(shape), data["mean"], data["std"], classes, num  # type: ignore[return-value]


def load_torchscript(spec: str, map_location: str = "cpu") -> tuple[ImageClassifier, dict]:
    """Load ``torchscript:PATH`` (or a bare PATH) with its ``PATH.json`` sidecar.

    Raises:
        UserInputError: a missing file or sidecar.
        CorruptFileError: a file that is no TorchScript archive, a bad sidecar, or a network
            whose output does not match the sidecar.
    """
    path = check_file(spec.removeprefix(TORCHSCRIPT_PREFIX), "TorchScript file")
    side = sidecar_path(path)
    shape, mean, std, classes, num = _read_sidecar(side)
    try:
        with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; the user chose it
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.load(str(path), map_location=map_location)
    except (RuntimeError, ValueError) as err:
        reason = (str(err).strip().splitlines() or ["unreadable"])[0]
        raise CorruptFileError(f"{path} is not a TorchScript archive (torch.jit.save): "
                               f"{reason}") from None
    num_classes = len(classes) if classes is not None else num
    try:
        model = ImageClassifier(net, mean, std, arch="torchscript", num_classes=num_classes,
                                input_shape=shape, classes=classes)
    except (TypeError, ValueError) as err:
        raise CorruptFileError(f"{side}: {err}") from None
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros((1, *shape), device=model.mean.device))  # (1, K)
    except Exception as err:  # the file's own code failed on its declared input
        raise CorruptFileError(f"{path}: forward on a {'x'.join(map(str, shape))} image failed: "
                               f"{type(err).__name__}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CorruptFileError(f"{path}: returns {got} for one image, but {side.name} declares "
                               f"{num_classes} classes; it must return logits (B, {num_classes})")
    source = f"{TORCHSCRIPT_PREFIX}{path.resolve()}"
    meta: dict[str, Any] = {"arch": "torchscript", "source": source, "imported": True,
                            "num_classes": num_classes, "input_shape": list(shape),
                            "classes": model.classes, "mean": model.mean.flatten().tolist(),
                            "std": model.std.flatten().tolist()}
    return model, meta
