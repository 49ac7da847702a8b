"""Safe checkpoints of NIM / MIM autoencoders (You et al., NeurIPS 2023, "Beyond Pretrained
Features: Noisy Image Modeling Provides Adversarial Defense").

Weights go to ``<stem>.safetensors``, the :class:`NIMConfig` (image size included) and
provenance to ``<stem>.json``; nothing is unpickled. ``load_nim(..., image_size=...)`` refuses a
model trained for another image size with a one-line ``ValueError``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from advimage.defend.nim_model import NIMAutoencoder, NIMConfig
from advimage.models.checkpoint import check_state_dict
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
    """Rebuild a saved autoencoder (eval mode, CPU); ``image_size`` (H, W) must match if given."""
    stem = _stem(path)
    sidecar = stem.with_name(stem.name + ".json")
    weights = stem.with_name(stem.name + ".safetensors")
    if not sidecar.exists() or not weights.exists():
        raise ValueError(f"no NIM checkpoint at {stem} (need {weights.name} and {sidecar.name})")
    meta = json.loads(sidecar.read_text())
    if meta.get("kind") != _KIND:
        raise ValueError(f"{sidecar} is not a NIM autoencoder checkpoint")
    config = NIMConfig.from_dict(meta["config"])
    if image_size is not None and tuple(image_size) != config.image_size:
        h, w = config.image_size
        raise ValueError(f"NIM checkpoint {stem.name} was trained on {h}x{w} images, "
                         f"not {image_size[0]}x{image_size[1]}")
    model = NIMAutoencoder(config)
    state = load_file(str(weights))
    check_state_dict(model, state, str(weights))
    model.load_state_dict(state)
    return model.eval()
