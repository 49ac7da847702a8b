"""Safe checkpoints: weights in safetensors plus a JSON sidecar describing how to rebuild them.

Pickle-based ``torch.save`` files can execute arbitrary code when loaded, so advimage never
unpickles: weights go to ``<stem>.safetensors`` (the Hugging Face safetensors format) and the
architecture, normalization and provenance go to ``<stem>.json``. Third-party pickles are
converted once through ``import_reference`` (safe ``weights_only`` loader).
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from advimage.errors import UserInputError
from advimage.jsonfile import read_json_object
from advimage.models.classifier import ImageClassifier
from advimage.models.factory import MODELS, create_model
from advimage.models.safe_files import (
    PICKLE_REFUSED,
    CheckpointError,
    CorruptCheckpointError,
    check_file,
    looks_like_pickle,
    read_safetensors,
)

__all__ = [
    "CheckpointError",
    "CorruptCheckpointError",
    "FORMAT_VERSION",
    "check_classes",
    "check_sidecar",
    "load_checkpoint",
    "save_checkpoint",
]

FORMAT_VERSION = 1
SUFFIX = ".safetensors"
_REPLACED_SUFFIXES = {"", ".pt", ".pth", ".th", ".ckpt", ".bin", ".json"}
_PICKLE_SUFFIXES = {".pt", ".pth", ".th", ".pkl", ".pickle", ".ckpt", ".bin"}
# Sidecar keys that define the model: meta may not change them.
_STRUCTURAL = ("format_version", "arch", "arch_kwargs", "num_classes", "input_shape", "mean", "std")


def _weights_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.suffix == SUFFIX:
        return p
    if p.suffix in _REPLACED_SUFFIXES:
        return p.with_suffix(SUFFIX)
    return p.with_name(p.name + SUFFIX)


def _atomic_write(target: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``target`` so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _version() -> str:
    from advimage import __version__

    return __version__


def save_checkpoint(
    model: ImageClassifier, path: str | os.PathLike, *, meta: dict | None = None
) -> Path:
    """Write the state dict to ``<stem>.safetensors`` and a description to ``<stem>.json``.

    ``meta`` keys (dataset, accuracy, train_config, seed, anything JSON-serializable) are merged
    into the sidecar. Both files are written atomically. Returns the weights path.
    """
    if not isinstance(model, ImageClassifier):
        raise ValueError(
            f"save_checkpoint needs an ImageClassifier, got {type(model).__name__}; "
            "use create_model or wrap_model"
        )
    if Path(path).is_dir():
        raise UserInputError(f"{path} is a directory; give the checkpoint file to write, e.g. "
                             f"{Path(path) / 'model.safetensors'}")
    if model.classes is not None:
        check_classes(model.classes, model.num_classes)
    meta = dict(meta or {})
    weights = _weights_path(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    sidecar: dict = {
        "format_version": FORMAT_VERSION,
        "arch": model.arch,
        "arch_kwargs": model.arch_kwargs,
        "num_classes": model.num_classes,
        "input_shape": list(model.input_shape),
        "classes": model.classes,
        "mean": model.mean.detach().cpu().flatten().tolist(),
        "std": model.std.detach().cpu().flatten().tolist(),
        "dataset": None,
        "accuracy": None,
        "train_config": None,
        "seed": None,
        "advimage_version": _version(),
        "torch_version": torch.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "fingerprint": model.fingerprint(),
    }
    for key in _STRUCTURAL:
        if key in meta and meta[key] != sidecar[key]:
            raise ValueError(f"meta may not override {key!r} ({meta[key]!r} != {sidecar[key]!r})")
    sidecar.update(meta)
    try:
        text = json.dumps(sidecar, indent=2, sort_keys=True)
    except TypeError as exc:
        raise ValueError(f"checkpoint meta must be JSON-serializable: {exc}") from None

    tensors: dict[str, Tensor] = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        if t.data_ptr() in seen and t.numel():  # tied weights: safetensors refuses shared memory
            t = t.clone()
        seen.add(t.data_ptr())
        tensors[name] = t
    _atomic_write(weights, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    _atomic_write(weights.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text + "\n"))
    return weights


def check_classes(classes: object, num_classes: int, what: str = "classes") -> list[str]:
    """``classes`` as a list of ``num_classes`` non-empty names, else a one-line
    :class:`UserInputError` (a checkpoint with another count could not be loaded back).
    Names may repeat: ImageNet-1k has two "crane" and two "maillot" classes."""
    if isinstance(classes, str) or not isinstance(classes, (list, tuple)):
        raise UserInputError(f"{what} must be a list of names, got {type(classes).__name__}")
    names = [str(c).strip() for c in classes]
    if len(names) != num_classes:
        raise UserInputError(f"{what} lists {len(names)} names but the model has {num_classes} "
                             "outputs; give one name per output")
    if not all(names):
        raise UserInputError(f"{what} must be non-empty names, got an empty one")
    return names


def check_state_dict(model: torch.nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Raise a one-line ``CheckpointError`` naming the first missing/unexpected/mis-shaped key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise CheckpointError(f"{source}: missing key {missing[0]!r} ({len(missing)} missing)")
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise CheckpointError(
            f"{source}: unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected)"
        )
    for key, ref in expected.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{source}: shape mismatch for {key!r}: file has {tuple(state[key].shape)}, "
                f"model expects {tuple(ref.shape)}"
            )


def load_checkpoint(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
) -> tuple[ImageClassifier, dict]:
    """Rebuild the model described by the sidecar and load its weights strictly.

    Returns ``(model, sidecar_dict)``; the model is in eval mode on ``map_location``.
    Raises ``CheckpointError`` for missing files, directories and unknown archs, and
    ``CorruptCheckpointError`` (also a :class:`~advimage.errors.CorruptFileError`) for pickles,
    damaged files, mismatched weights and a sidecar whose mean/std/input shape disagree with them.
    """
    given = Path(path)
    if not given.exists() and given.suffix != SUFFIX:
        given = _weights_path(given)
    weights = check_file(given, "checkpoint file")
    if weights.suffix in _PICKLE_SUFFIXES or looks_like_pickle(weights):
        raise CorruptCheckpointError(
            f"{weights} is a pickle (torch.save) file, {PICKLE_REFUSED}; convert it once with "
            "`advimage models import` (advimage.models.import_reference)"
        )
    side_path = weights.with_suffix(".json")
    sidecar = _read_sidecar(side_path, weights)
    model = _rebuild(sidecar, side_path)
    state = read_safetensors(weights)
    check_state_dict(model, state, str(weights))
    model.load_state_dict(state, strict=True)
    check_sidecar(model, sidecar, side_path)
    classes = sidecar.get("classes")
    if classes is not None:
        model.classes = [str(c) for c in classes]
    expected_fp = sidecar.get("fingerprint")
    if expected_fp is not None and model.fingerprint() != expected_fp:
        raise CorruptCheckpointError(
            f"{weights} does not match the fingerprint in {side_path.name} (file replaced?)"
        )
    model.eval()
    return model.to(map_location), sidecar


def _read_sidecar(side_path: Path, weights: Path) -> dict:
    if not side_path.is_file():
        raise CheckpointError(f"sidecar {side_path.name} not found next to {weights}")
    sidecar = read_json_object(side_path, "sidecar {path} is not valid JSON: {reason}",
                               CorruptCheckpointError)
    for key in ("arch", "num_classes"):
        if key not in sidecar:
            raise CorruptCheckpointError(f"sidecar {side_path.name} lacks required key {key!r}")
    version = sidecar.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"sidecar {side_path.name} has format_version {version!r}; this "
                              f"advimage reads version {FORMAT_VERSION} (upgrade advimage)")
    return sidecar


def _rebuild(sidecar: dict, side_path: Path) -> ImageClassifier:
    arch = sidecar["arch"]
    if arch not in MODELS:
        raise CheckpointError(
            f"sidecar arch {arch!r} is not a registered model; choose one of: "
            f"{', '.join(MODELS.names())}"
        )
    kwargs = sidecar.get("arch_kwargs") or {}
    try:
        return create_model(arch, int(sidecar["num_classes"]), **dict(kwargs))
    except (TypeError, ValueError) as exc:
        raise CorruptCheckpointError(
            f"cannot rebuild {arch!r} from {side_path.name}: {exc}") from None


def check_sidecar(model: ImageClassifier, sidecar: dict, side_path: Path) -> None:
    """Refuse a sidecar whose classes, input shape or mean/std disagree with the loaded model.

    The weights hold the normalization (``mean``/``std`` buffers) and the architecture fixes the
    input shape, so a sidecar that says otherwise was edited or belongs to other weights: a
    :class:`CorruptCheckpointError` naming the sidecar and the field, never silently ignored.
    """
    name = side_path.name
    classes = sidecar.get("classes")
    if classes is not None and (not isinstance(classes, list)
                                or len(classes) != model.num_classes):
        raise CorruptCheckpointError(f"sidecar {name}: classes must list {model.num_classes} names")
    shape = sidecar.get("input_shape")
    if shape is not None and shape != list(model.input_shape):
        raise CorruptCheckpointError(
            f"sidecar {name}: input_shape {shape} disagrees with the weights ({model.arch} takes "
            f"{list(model.input_shape)}); the sidecar was edited or belongs to other weights")
    for field in ("mean", "std"):
        stored = getattr(model, field).detach().cpu().flatten().double()
        value = sidecar.get(field)
        if value is None:
            continue
        try:
            given = torch.tensor(value, dtype=torch.float64).flatten()
            same = given.shape == stored.shape and torch.allclose(given, stored, rtol=1e-6,
                                                                   atol=1e-7)
        except (TypeError, ValueError, RuntimeError):
            same = False
        if not same:
            raise CorruptCheckpointError(
                f"sidecar {name}: {field} {value} disagrees with the normalization stored in the "
                f"weights {[round(v, 6) for v in stored.tolist()]}; the sidecar was edited or "
                "belongs to other weights")
