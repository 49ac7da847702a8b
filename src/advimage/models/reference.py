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

__all__ = ["import_reference", "infer_reference_arch"]

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
MNIST_CLASSES = [str(d) for d in range(10)]

# File-name patterns of the supported reference models -> registered arch names.
_NAME_PATTERNS = (
    (re.compile(r"^(resnet\d+)-[0-9a-f]+\.th$", re.IGNORECASE), None),  # akamaster
    (re.compile(r"^mnist_lenet5_\w+\.pth?$", re.IGNORECASE), "lenet5-mnist"),  # advertorch
)
# Class names by arch; every other supported reference is a CIFAR-10 model.
_CLASSES = {"lenet5-mnist": MNIST_CLASSES}


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


def import_reference(path: str | os.PathLike, arch: str | None = None) -> ImageClassifier:
    """Load a reference model's weights safely into the matching registered architecture.

    Args:
        path: the ``.th``/``.pt`` file (e.g. ``resnet20-12fca82f.th``).
        arch: registered arch name; inferred from the file name when ``None``.

    Returns:
        The model in eval mode on CPU, with class names set when known.
    """
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"reference model file not found: {file}")
    arch = (arch or infer_reference_arch(file)).lower()
    model = create_model(arch, 10)
    try:
        obj = torch.load(file, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{file}: not loadable with weights_only=True: {first}") from None
    raw = _extract_state(obj, str(file))
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
    model.classes = list(_CLASSES.get(arch, CIFAR10_CLASSES))
    return model.eval()
