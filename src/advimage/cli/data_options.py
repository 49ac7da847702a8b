"""Parse-time types of the model/data options and how ``load_data`` fits the data to the model.

The option types raise :class:`~advimage.cli.common.CliError` (not a ``ValueError``, which
argparse would turn into a usage message), so ``--batch-size 0`` is one line, exit 2, before
any work. :func:`~advimage.cli.common.load_data` fits the data to the model a command loaded: its
class names (folder trees are labelled by them), its number of outputs (labels beyond them are
refused) and its input channels.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from advimage.cli.cli_error import CliError
from advimage.errors import UserInputError

if TYPE_CHECKING:
    from torch import nn

    from advimage.data.base import ImageDataset

__all__ = ["check_labels_fit", "class_map_option", "data_kwargs", "positive_int"]


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


def data_kwargs(a: argparse.Namespace, classes: list[str] | None,
                model: nn.Module | None = None) -> dict[str, Any]:
    """``load_dataset`` keywords of ``a``'s data options and ``model`` (classes, channels)."""
    from advimage.data.registry import dataset_accepts

    kw: dict[str, Any] = {}
    if getattr(a, "image_size", None):
        kw["image_size"] = a.image_size
    if classes is None:
        classes = getattr(model, "classes", None)
    if classes:
        kw["classes"] = [str(c) for c in classes]
    if getattr(a, "class_map", None):
        kw["class_map"] = a.class_map
    shape = getattr(model, "input_shape", None)
    if shape and int(shape[0]) in (1, 3) and dataset_accepts(a.data, "channels"):
        kw["channels"] = int(shape[0])
    return kw


def check_labels_fit(a: argparse.Namespace, ds: ImageDataset,
                     model: nn.Module | None = None) -> None:
    """Refuse labels ``model`` cannot output (they could only ever count as wrong)."""
    n = getattr(model, "num_classes", None)
    if not isinstance(n, int) or len(ds) == 0:
        return
    top = int(ds.labels.max())
    if top >= n:
        hint = " (map the folders with --class-map FOLDER=INDEX)" \
            if ds.label_source == "position" else ""
        raise UserInputError(f"dataset {a.data!r} has labels up to {top} but the model has "
                             f"{n} outputs{hint}")
