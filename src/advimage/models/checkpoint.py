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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from advimage.models.classifier import ImageClassifier
from advimage.models.factory import MODELS, create_model

__all__ = ["CheckpointError", "FORMAT_VERSION", "load_checkpoint", "save_checkpoint"]

FORMAT_VERSION = 1
SUFFIX = ".safetensors"
_REPLACED_SUFFIXES = {"", ".pt", ".pth", ".th", ".ckpt", ".bin", ".json"}
_PICKLE_SUFFIXES = {".pt", ".pth", ".th", ".pkl", ".pickle", ".ckpt", ".bin"}
# Sidecar keys that define the model: meta may not change them.
_STRUCTURAL = ("format_version", "arch", "arch_kwargs", "num_classes", "input_shape", "mean", "std")


class CheckpointError(ValueError):
    """A checkpoint file is missing, unsafe (pickle) or does not match its architecture."""


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


def _looks_like_pickle(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(9)
    # safetensors: u64 little-endian header length, then the JSON header's "{".
    if len(head) == 9 and head[8:9] == b"{":
        if int.from_bytes(head[:8], "little") < path.stat().st_size:
            return False
    # torch.save zip archives start with "PK\x03\x04"; raw pickles with PROTO (0x80) + version.
    is_zip = head.startswith(b"PK\x03\x04")
    return is_zip or (len(head) >= 2 and head[0] == 0x80 and head[1] in (2, 3, 4, 5))


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
    Raises ``CheckpointError`` for pickles, missing files, unknown archs and mismatched weights.
    """
    given = Path(path)
    if not given.exists() and given.suffix != SUFFIX:
        given = _weights_path(given)
    if not given.exists():
        raise CheckpointError(f"checkpoint file not found: {given}")
    if given.suffix in _PICKLE_SUFFIXES or _looks_like_pickle(given):
        raise CheckpointError(
            f"{given} is a pickle (torch.save) file, which advimage never unpickles; convert it "
            "with advimage.models.import_reference(path) and save_checkpoint"
        )
    weights = given
    side_path = weights.with_suffix(".json")
    if not side_path.exists():
        raise CheckpointError(f"sidecar {side_path.name} not found next to {weights}")
    try:
        sidecar = json.loads(side_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"sidecar {side_path} is not valid JSON: {exc}") from None
    for key in ("arch", "num_classes"):
        if key not in sidecar:
            raise CheckpointError(f"sidecar {side_path.name} lacks required key {key!r}")
    arch = sidecar["arch"]
    if arch not in MODELS:
        raise CheckpointError(
            f"sidecar arch {arch!r} is not a registered model; choose one of: "
            f"{', '.join(MODELS.names())}"
        )
    kwargs = dict(sidecar.get("arch_kwargs") or {})
    try:
        model = create_model(arch, int(sidecar["num_classes"]), **kwargs)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot rebuild {arch!r} from {side_path.name}: {exc}") from None
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {exc}") from None
    check_state_dict(model, state, str(weights))
    model.load_state_dict(state, strict=True)
    classes = sidecar.get("classes")
    if classes is not None:
        if not isinstance(classes, list) or len(classes) != model.num_classes:
            raise CheckpointError(
                f"sidecar {side_path.name}: classes must list {model.num_classes} names"
            )
        model.classes = [str(c) for c in classes]
    expected_fp = sidecar.get("fingerprint")
    if expected_fp is not None and model.fingerprint() != expected_fp:
        raise CheckpointError(
            f"{weights} does not match the fingerprint in {side_path.name} (file replaced?)"
        )
    model.eval()
    return model.to(map_location), sidecar
