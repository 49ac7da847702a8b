"""Hugging Face image classifiers (``hf:ORG/NAME[@REVISION]`` or a local model folder).

The model loads through transformers' ``AutoModelForImageClassification``; its resolution, mean
and std come from the image-processor config (``preprocessor_config.json``), so the wrapped
:class:`~advimage.models.ImageClassifier` takes images in ``[0, 1]`` like every advimage model
and knows its input size and class names (``config.id2label``). transformers is an optional
extra (``pip install 'advimage[hf]'``), imported only when such a model is loaded. Remote code
(``trust_remote_code``) is never run.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import Tensor, nn

from advimage.errors import CorruptFileError, UserInputError
from advimage.models.classifier import ImageClassifier

__all__ = ["HF_PREFIX", "load_hf_model"]

HF_PREFIX = "hf:"
_INSTALL = "pip install 'advimage[hf]'"


class _Logits(nn.Module):
    """A transformers image classifier as a plain network: normalized pixels -> logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        try:
            return self.model(pixel_values=x).logits  # (B, K)
        except ValueError as err:  # transformers' own size check (e.g. ViT): a shape misfit
            raise RuntimeError(str(err)) from err


def _transformers(spec: str) -> ModuleType:
    try:
        return importlib.import_module("transformers")
    except ImportError:
        raise UserInputError(f"--model {spec} needs transformers: {_INSTALL}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _side(value: Any, what: str, where: str) -> tuple[int, int]:
    """(H, W) from an image-processor ``size``/``crop_size`` entry."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return int(value["height"]), int(value["width"])
        if "shortest_edge" in value:  # resized then centre-cropped to a square of that side
            return int(value["shortest_edge"]), int(value["shortest_edge"])
    raise CorruptFileError(f"{where}: cannot read the image size from {what}={value!r}")


def _preprocessing(proc: dict, config: Any, where: str) -> tuple[tuple[int, int], list, list]:
    """Resolution (H, W), mean and std (for images in [0, 1]) from the image-processor dict."""
    if proc.get("do_center_crop") and proc.get("crop_size") is not None:
        hw = _side(proc["crop_size"], "crop_size", where)
    elif proc.get("size") is not None:
        hw = _side(proc["size"], "size", where)
    elif isinstance(getattr(config, "image_size", None), int):
        hw = (config.image_size, config.image_size)
    else:
        raise CorruptFileError(f"{where}: preprocessor_config.json gives no image size")
    channels = int(getattr(config, "num_channels", 3))
    mean, std = [0.0] * channels, [1.0] * channels
    if proc.get("do_normalize", True):
        if proc.get("image_mean") is None or proc.get("image_std") is None:
            raise CorruptFileError(f"{where}: preprocessor_config.json has no image_mean/std")
        mean, std = proc["image_mean"], proc["image_std"]
        if isinstance(mean, (int, float)):
            mean, std = [mean] * channels, [std] * channels
    # the processor feeds pixel * rescale_factor (pixel in 0..255); advimage feeds x in [0, 1]
    scale = 255.0 * (float(proc.get("rescale_factor", 1 / 255)) if proc.get("do_rescale", True)
                     else 1.0)
    return hw, [float(m) / scale for m in mean], [float(s) / scale for s in std]


def _classes(config: Any, num_classes: int) -> list[str] | None:
    """Names from ``id2label``; None for transformers' placeholders (LABEL_0, ...)."""
    labels = getattr(config, "id2label", None) or {}
    names = [str(labels.get(i, labels.get(str(i), ""))) for i in range(num_classes)]
    if not all(names) or names == [f"LABEL_{i}" for i in range(num_classes)]:
        return None
    return names


def _locate(spec: str) -> tuple[str, str | None, str]:
    """(name or folder for ``from_pretrained``, revision, how errors name it) for ``spec``."""
    if spec.startswith(HF_PREFIX):
        name, _, revision = spec[len(HF_PREFIX):].partition("@")
        if not name:
            raise UserInputError(f"--model {spec}: give the hub model as hf:ORG/NAME[@REVISION]")
        return name, revision or None, spec
    folder = Path(spec)
    if not (folder / "config.json").is_file():
        raise CorruptFileError(f"{folder} has no config.json: not a transformers model folder "
                               "(--model takes a .safetensors checkpoint, hf:ORG/NAME, ...)")
    return str(folder.resolve()), None, str(folder)


def _fetch(tf: ModuleType, name: str, revision: str | None, where: str, hub: bool) -> tuple:
    """(config, preprocessor dict, network, config.json path) or a one-line error."""
    from transformers.image_processing_utils import ImageProcessingMixin
    from transformers.utils import cached_file

    try:
        config_file = cached_file(name, "config.json", revision=revision)
        config = tf.AutoConfig.from_pretrained(name, revision=revision)
        proc, _ = ImageProcessingMixin.get_image_processor_dict(name, revision=revision)
        net = tf.AutoModelForImageClassification.from_pretrained(
            name, config=config, revision=revision)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        if hub:
            raise UserInputError(
                f"{where}: cannot load this Hugging Face model (unknown name, private, or the "
                f"hub cannot be reached; HF_HUB_OFFLINE=1 reads only the local cache): "
                f"{_first_line(err)}") from None
        raise CorruptFileError(f"{where}: not a loadable transformers image classifier: "
                               f"{_first_line(err)}") from None
    return config, proc, net, Path(str(config_file))


def load_hf_model(spec: str) -> tuple[ImageClassifier, dict[str, Any]]:
    """Load ``hf:ORG/NAME[@REVISION]`` or a local transformers model folder.

    Returns the model (eval mode, takes [0, 1] images) and metadata whose ``source`` records
    where it came from: ``hf:ORG/NAME@COMMIT`` (the resolved hub commit) or the folder.

    Raises:
        UserInputError: transformers is missing, or the hub name is unknown or unreachable.
        CorruptFileError: a folder without ``config.json`` or that transformers cannot load.
    """
    tf = _transformers(spec)
    name, revision, where = _locate(spec)
    hub = spec.startswith(HF_PREFIX)
    config, proc, net, config_file = _fetch(tf, name, revision, where, hub)
    hw, mean, std = _preprocessing(proc, config, where)
    num_classes = int(config.num_labels)
    channels = len(mean)
    commit = revision or "main"
    if config_file.parent.parent.name == "snapshots":  # hub cache: snapshots/<commit>/
        commit = config_file.parent.name
    source = f"{HF_PREFIX}{name}@{commit}" if hub else name
    arch = f"hf-{getattr(config, 'model_type', 'model')}"
    try:
        model = ImageClassifier(_Logits(net), mean, std, arch=arch, num_classes=num_classes,
                                input_shape=(channels, *hw), classes=_classes(config, num_classes))
    except ValueError as err:
        raise CorruptFileError(f"{where}: {_first_line(err)}") from None
    model.eval()
    meta = {"arch": arch, "source": source, "imported": True, "num_classes": num_classes,
            "input_shape": list(model.input_shape), "classes": model.classes,
            "mean": mean, "std": std}
    return model, meta
