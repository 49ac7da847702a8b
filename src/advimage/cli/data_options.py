"""Parse-time types of the model/data options and how ``load_data`` fits the data to the model.

The option types raise :class:`~advimage.cli.common.CliError` (not a ``ValueError``, which
argparse would turn into a usage message), so ``--batch-size 0`` is one line, exit 2, before
any work. :func:`remember_model` keeps what :func:`~advimage.cli.common.load_data` needs to
know about the model a command loaded: its class names (folder trees are labelled by them), its
number of outputs (labels beyond them are refused) and its input channels.
"""

from __future__ import annotations

import argparse
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from advimage.cli.cli_error import CliError
from advimage.errors import UserInputError

if TYPE_CHECKING:
    from torch import nn

    from advimage.data.base import ImageDataset

__all__ = ["check_labels_fit", "class_map_option", "data_kwargs", "positive_int",
           "remember_model"]


@dataclass(frozen=True)
class _ModelInfo:
    classes: list[str] | None
    num_classes: int | None
    channels: int | None


# id(namespace) -> (weak reference to it, what its model said); Namespace is unhashable
_MODELS: dict[int, tuple[weakref.ref, _ModelInfo]] = {}


def positive_int(flag: str) -> Callable[[str], int]:
    """An argparse ``type`` for ``flag`` that accepts only integers >= 1."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise CliError(f"{flag} must be a positive integer, got {text!r}") from None
        if value < 1:
            raise CliError(f"{flag} must be a positive integer (>= 1), got {value}")
        return value

    parse.__name__ = "positive int"
    return parse


def class_map_option(text: str) -> dict[str, int | str]:
    """``--class-map FOLDER=CLASS,...`` (CLASS: a class index or the model's class name)."""
    from advimage.data.labels import parse_class_map

    try:
        return parse_class_map(text)
    except UserInputError as err:
        raise CliError(f"--class-map: {err}") from None


def remember_model(a: argparse.Namespace, model: nn.Module) -> None:
    """Note ``model``'s class names, outputs and input channels for ``load_data(a)``."""
    classes = getattr(model, "classes", None)
    n = getattr(model, "num_classes", None)
    shape = getattr(model, "input_shape", None)
    info = _ModelInfo([str(c) for c in classes] if classes else None,
                      int(n) if isinstance(n, int) else None,
                      int(shape[0]) if shape else None)
    for key in [k for k, (ref, _) in _MODELS.items() if ref() is None]:
        del _MODELS[key]
    _MODELS[id(a)] = (weakref.ref(a), info)


def _model_info(a: argparse.Namespace) -> _ModelInfo | None:
    entry = _MODELS.get(id(a))
    return entry[1] if entry is not None and entry[0]() is a else None


def data_kwargs(a: argparse.Namespace, classes: list[str] | None) -> dict[str, Any]:
    """``load_dataset`` keywords of ``a``'s data options and the model (classes, channels)."""
    from advimage.data.registry import dataset_accepts

    kw: dict[str, Any] = {}
    if getattr(a, "image_size", None):
        kw["image_size"] = a.image_size
    info = _model_info(a)
    if classes is None and info is not None:
        classes = info.classes
    if classes:
        kw["classes"] = list(classes)
    if getattr(a, "class_map", None):
        kw["class_map"] = a.class_map
    if info is not None and info.channels in (1, 3) and dataset_accepts(a.data, "channels"):
        kw["channels"] = info.channels
    return kw


def check_labels_fit(a: argparse.Namespace, ds: ImageDataset) -> None:
    """Refuse labels the model cannot output (they could only ever count as wrong)."""
    info = _model_info(a)
    if info is None or info.num_classes is None or len(ds) == 0:
        return
    top = int(ds.labels.max())
    if top >= info.num_classes:
        hint = " (map the folders with --class-map FOLDER=INDEX)" \
            if ds.label_source == "position" else ""
        raise UserInputError(f"dataset {a.data!r} has labels up to {top} but the model has "
                             f"{info.num_classes} outputs{hint}")
