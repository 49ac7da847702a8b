"""Import third-party reference weights (pickled ``torch.save`` files) without running code.

Supports the CIFAR-10 ResNets of akamaster/pytorch_resnet_cifar10 (He et al., 2016) and the
MNIST LeNet5 models shipped with advertorch (Ding et al., 2019, "advertorch v0.1"). Files are
read with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers,
so a malicious pickle cannot execute code. The result saves with ``save_checkpoint``.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch
from torch import Tensor

from advimage.models.checkpoint import CheckpointError, check_state_dict
from advimage.models.classifier import ImageClassifier
from advimage.models.factory import MODELS, create_model
from advimage.models.imagenet_classes import imagenet_class_names
from advimage.models.safe_files import (
    PICKLE_REFUSED,
    CorruptCheckpointError,
    check_file,
    looks_like_pickle,
    looks_like_safetensors,
    read_safetensors,
)

__all__ = ["import_reference", "infer_reference_arch", "reference_dataset"]

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
MNIST_CLASSES = [str(d) for d in range(10)]

# File-name patterns of the supported reference models -> registered arch names.
_NAME_PATTERNS = (
    (re.compile(r"^(resnet\d+)-[0-9a-f]+\.th$", re.IGNORECASE), None),  # akamaster
    (re.compile(r"^mnist_lenet5_\w+\.pth?$", re.IGNORECASE), "lenet5-mnist"),  # advertorch
    (re.compile(r"^efficientnet-lite0(-[0-9a-f]+)?\.pth?$", re.IGNORECASE), "efficientnet-lite0"),
)
# Training dataset by arch; every other supported reference is a CIFAR-10 model.
_DATASETS = {"lenet5-mnist": "mnist", "efficientnet-lite0": "imagenet"}
# Class names by arch; every other supported reference is a CIFAR-10 model.
_CLASSES = {"lenet5-mnist": MNIST_CLASSES, "efficientnet-lite0": imagenet_class_names()}


def reference_dataset(arch: str) -> str:
    """The dataset the supported reference weights of ``arch`` were trained on (their class
    names are the ones ``import_reference`` sets)."""
    return _DATASETS.get(str(arch).lower(), "cifar10")


def infer_reference_arch(path: str | os.PathLike) -> str:
    """Arch name for a reference file name (``resnet20-*.th`` -> ``resnet20``)."""
    name = Path(path).name
    for pattern, arch in _NAME_PATTERNS:
        match = pattern.match(name)
        if match:
            return arch or match.group(1).lower()
    raise ValueError(
        f"cannot infer the architecture from file name {name!r}; pass arch= (one of: "
        f"{', '.join(MODELS.names())})"
    )


def _extract_state(obj: object, source: str) -> dict[str, Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{source}: expected a state dict of tensors (or {{'state_dict'}})")
    state = {}
    for key, value in obj.items():
        key = str(key)
        state[key.removeprefix("module.")] = value  # saved from nn.DataParallel
    return state


def _load_tensors(file: Path) -> object:
    """The file's content: safetensors as they are, a ``torch.save`` pickle through the
    weights-only unpickler (tensors and plain containers only, never code)."""
    if looks_like_safetensors(file) or file.suffix == ".safetensors":
        if looks_like_pickle(file):
            raise CorruptCheckpointError(
                f"{file} is named .safetensors but holds a pickle (torch.save) file: "
                f"{PICKLE_REFUSED}; rename it to .pt to import it through the weights-only loader")
        return read_safetensors(file)
    try:
        with file.open("rb") as fh:  # a handle: torch would pick a loader by the file's suffix
            return torch.load(fh, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise CorruptCheckpointError(_unpickling_problem(file, str(exc))) from None
    except (RuntimeError, EOFError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CorruptCheckpointError(
            f"{file} is damaged or not a torch.save file ({first})") from None


_TORCH_ADVICE = ("weights only load failed", "please file an issue", "check the documentation")


def _unpickling_problem(file: Path, text: str) -> str:
    """One line for torch's weights-only refusal, without its advice to load the file unsafely."""
    named = re.search(r"GLOBAL ([\w.]+)", text)
    if named:
        what = f"it references {named.group(1)}"
    elif looks_like_pickle(file) and "weights only load failed" in text.lower():
        what = "it holds objects other than tensors"
    else:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        reason = next((ln for ln in lines if not ln.lower().startswith(_TORCH_ADVICE)),
                      "unreadable pickle")
        return f"{file} is damaged or not a torch.save file ({reason})"
    return f"{file} was refused: {what}, and loading it could run code (only tensors are loaded)"


def import_reference(path: str | os.PathLike, arch: str | None = None) -> ImageClassifier:
    """Load a reference model's weights safely into the matching registered architecture.

    Args:
        path: the ``.th``/``.pt`` file (e.g. ``resnet20-12fca82f.th``), or the same state dict
            saved as ``.safetensors``.
        arch: registered arch name; inferred from the file name when ``None``.

    Returns:
        The model in eval mode on CPU, with class names set when known.

    Raises:
        CheckpointError: a missing file or a directory, or weights that do not fit ``arch``.
        CorruptCheckpointError: a damaged file, or a pickle that names anything but tensors
            (refused without running it; the message never suggests loading it unsafely).
    """
    file = check_file(path, "reference model file")
    arch = (arch or infer_reference_arch(file)).lower()
    classes = list(_CLASSES.get(arch, CIFAR10_CLASSES))
    model = create_model(arch, len(classes))
    raw = _extract_state(_load_tensors(file), str(file))
    state = {f"net.{k}": v for k, v in raw.items()}
    expected = model.state_dict()
    # Normalization lives in the wrapper and old BatchNorm checkpoints lack the step counter.
    for key in ("mean", "std"):
        state.setdefault(key, expected[key])
    for key, ref in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(ref)
    check_state_dict(model, state, str(file))
    model.load_state_dict(state, strict=True)
    model.classes = classes
    return model.eval()
