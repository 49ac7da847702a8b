"""Safe checkpoints of NIM / MIM autoencoders (You et al., NeurIPS 2023, "Beyond Pretrained
Features: Noisy Image Modeling Provides Adversarial Defense").

Weights go to ``<stem>.safetensors``, the :class:`NIMConfig` (image size included) and
provenance to ``<stem>.json``; nothing is unpickled. ``load_nim(..., image_size=...)`` refuses a
model trained for another image size with a one-line ``ValueError``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from advimage.defend.nim.model import NIMAutoencoder, NIMConfig
from advimage.errors import UserInputError
from advimage.jsonfile import read_json_object
from advimage.models.checkpoint import check_state_dict
from advimage.models.safe_files import CheckpointError, CorruptCheckpointError, read_safetensors
from advimage.utils import write_json

__all__ = ["load_nim", "save_nim"]

_KIND = "nim-autoencoder"


def _stem(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".safetensors", ".json") else p


def save_nim(model: NIMAutoencoder, path: str | os.PathLike,
             meta: dict[str, Any] | None = None) -> Path:
    """Write ``<stem>.safetensors`` + ``<stem>.json`` (config, image size); returns the weights."""
    if not isinstance(model, NIMAutoencoder):
        raise ValueError(f"save_nim needs a NIMAutoencoder, got {type(model).__name__}")
    stem = _stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    weights = stem.with_name(stem.name + ".safetensors")
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = weights.with_name(weights.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(weights)
    cfg = model.config.to_dict()
    write_json(stem.with_name(stem.name + ".json"),
               {"kind": _KIND, "config": cfg, "image_size": cfg["image_size"], **(meta or {})})
    return weights


def load_nim(path: str | os.PathLike,
             image_size: tuple[int, int] | None = None) -> NIMAutoencoder:
    """Rebuild a saved autoencoder (eval mode, CPU); ``image_size`` (H, W) must match if given.

    Raises:
        CheckpointError: no checkpoint at ``path`` (or a directory without one).
        CorruptCheckpointError: a damaged or pickled ``.safetensors``, a damaged sidecar, or
            weights that do not fit the sidecar's config (one line naming the file).
    """
    stem = _stem(path)
    if stem.is_dir():
        inside = (stem / "nim.safetensors").is_file()
        raise CheckpointError(f"{stem} is a directory, but a NIM checkpoint is expected"
                              + (f"; did you mean {stem / 'nim'}?" if inside else ""))
    sidecar = stem.with_name(stem.name + ".json")
    weights = stem.with_name(stem.name + ".safetensors")
    if not sidecar.is_file() or not weights.is_file():
        raise CheckpointError(
            f"no NIM checkpoint at {stem} (need {weights.name} and {sidecar.name})")
    config = _read_config(sidecar)
    if image_size is not None and tuple(image_size) != config.image_size:
        h, w = config.image_size
        raise UserInputError(f"NIM checkpoint {stem.name} was trained on {h}x{w} images, "
                             f"not {image_size[0]}x{image_size[1]}")
    model = NIMAutoencoder(config)
    state = read_safetensors(weights)
    try:
        check_state_dict(model, state, str(weights))
    except CheckpointError as exc:
        raise CorruptCheckpointError(f"{exc} (does not fit {sidecar.name})") from None
    model.load_state_dict(state)
    return model.eval()


def _read_config(sidecar: Path) -> NIMConfig:
    meta = read_json_object(sidecar, "sidecar {path} is not valid JSON: {reason}",
                            CorruptCheckpointError)
    if meta.get("kind") != _KIND:
        raise CheckpointError(f"{sidecar} is not a NIM autoencoder checkpoint")
    try:
        return NIMConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CorruptCheckpointError(f"sidecar {sidecar} holds no valid NIM config ({first})") \
            from None
