"""Save and load a :class:`CacheModel`: keys in safetensors, settings in a JSON sidecar.

Same convention as model checkpoints (never pickle): ``<stem>.safetensors`` holds the float16
keys and their labels, ``<stem>.json`` the layers, theta, lambda, mode options and the
fingerprint of the model the keys were computed with. Keys are only meaningful for that
exact model, so loading with another one is refused.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from advimage.defend.cache.model import CacheModel
from advimage.models.classifier import ImageClassifier
from advimage.utils import atomic_write_text

__all__ = ["CACHE_FORMAT", "load_cache", "save_cache"]

CACHE_FORMAT = "advimage-cache-1"
_OPTION_KEYS = ("theta", "lam", "mode", "k", "nprobe", "nlist", "flip")


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_cache(cache: CacheModel, path: str | os.PathLike, *, meta: dict | None = None) -> Path:
    """Write ``<stem>.safetensors`` + ``<stem>.json``; ``meta`` (JSON) is stored too."""
    weights, sidecar = _paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "layers": cache.layers,
        **{key: getattr(cache, key) for key in _OPTION_KEYS},
        "num_keys": int(cache.keys.shape[0]),
        "dim": int(cache.keys.shape[1]),
        "num_classes": cache.num_classes,
        "model_arch": cache.model.arch,
        "model_fingerprint": cache.model.fingerprint(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "meta": meta or {},
    }
    try:
        text = json.dumps(info, indent=2)
    except TypeError as exc:
        raise ValueError(f"cache meta must be JSON-serializable: {exc}") from None
    tensors = {"keys": cache.keys.detach().cpu().contiguous(),
               "labels": cache.key_labels.detach().cpu().contiguous()}
    fd, tmp = tempfile.mkstemp(dir=weights.parent, prefix=f".{weights.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": CACHE_FORMAT})
        os.replace(tmp, weights)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_text(sidecar, text + "\n")
    return weights


def read_cache_info(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON sidecar of a saved cache (``ValueError`` when missing or malformed)."""
    _, sidecar = _paths(path)
    if not sidecar.exists():
        raise ValueError(f"cache sidecar not found: {sidecar}")
    try:
        info = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cache sidecar {sidecar} is not valid JSON: {exc}") from None
    if not isinstance(info, dict) or info.get("format") != CACHE_FORMAT:
        raise ValueError(f"{sidecar} is not an advimage cache ({CACHE_FORMAT})")
    return info


def load_cache(
    path: str | os.PathLike, model: ImageClassifier, **overrides: Any
) -> CacheModel:
    """Rebuild a saved cache around ``model``; ``overrides`` change options (e.g. ``mode``).

    Raises ``ValueError`` when ``model`` is not the one the cache was built with.
    """
    weights, sidecar = _paths(path)
    info = read_cache_info(path)
    if not isinstance(model, ImageClassifier):
        raise ValueError(f"load_cache needs an ImageClassifier, got {type(model).__name__}")
    fingerprint = model.fingerprint()
    if info.get("model_fingerprint") != fingerprint:
        raise ValueError(
            f"cache {weights.name} was built for another model (fingerprint "
            f"{str(info.get('model_fingerprint'))[:12]}..., this {model.arch} model is "
            f"{fingerprint[:12]}...); rebuild it with `advimage cache build`"
        )
    if not weights.exists():
        raise ValueError(f"cache keys file not found: {weights}")
    try:
        tensors = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{weights} is not a readable safetensors file: {exc}") from None
    if set(tensors) != {"keys", "labels"}:
        raise ValueError(f"{weights} must hold exactly 'keys' and 'labels'")
    options = {key: info[key] for key in _OPTION_KEYS if key in info}
    options.update(overrides)
    device = next(iter(model.parameters())).device
    return CacheModel(model, info["layers"], tensors["keys"].to(device),
                      tensors["labels"].to(device), **options)
