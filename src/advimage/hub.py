"""Resolve a ``--model`` argument: bundled weights, an advimage checkpoint, or a reference file.

- ``bundled`` / ``bundled:NAME``: weights shipped inside the package (``advimage/weights``);
- ``PATH.safetensors`` (with its ``.json`` sidecar): an advimage checkpoint;
- ``PATH.th`` / ``PATH.pt`` / ``PATH.pth``: a third-party reference model imported through the
  safe ``weights_only`` loader (see ``advimage.models.import_reference``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from advimage.models import ImageClassifier, import_reference, load_checkpoint
from advimage.models.safe_files import check_file

__all__ = ["BUNDLED_DEFAULT", "list_bundled", "bundled_path", "load_model"]

BUNDLED_DEFAULT = "small-cnn-digits"
_REFERENCE_SUFFIXES = {".th", ".pt", ".pth"}


def _weights_dir() -> Path:
    return Path(str(resources.files("advimage") / "weights"))


def list_bundled() -> list[str]:
    return sorted(p.stem for p in _weights_dir().glob("*.safetensors"))


def bundled_path(name: str = BUNDLED_DEFAULT) -> Path:
    path = _weights_dir() / f"{name}.safetensors"
    if not path.exists():
        raise ValueError(
            f"no bundled weights {name!r}; available: {', '.join(list_bundled()) or 'none'}"
        )
    return path


def load_model(
    spec: str | Path, map_location: str = "cpu"
) -> tuple[ImageClassifier, dict[str, Any]]:
    """Load a model from a ``--model`` argument; returns the model (eval mode) and its metadata.

    A missing file, a directory, a pickled or damaged ``.safetensors`` and a sidecar that
    disagrees with its weights are one-line errors (:mod:`advimage.models.safe_files`).
    """
    text = str(spec)
    if text == "bundled" or text.startswith("bundled:"):
        name = text.split(":", 1)[1] if ":" in text else BUNDLED_DEFAULT
        model, meta = load_checkpoint(bundled_path(name), map_location=map_location)
    else:
        path = check_file(text, "model file")  # one line for a missing file or a directory
        if path.suffix in _REFERENCE_SUFFIXES:
            model = import_reference(path)
            meta = {"arch": model.arch, "source": str(path), "imported": True}
        else:
            model, meta = load_checkpoint(path, map_location=map_location)
    model.eval()
    return model, meta
