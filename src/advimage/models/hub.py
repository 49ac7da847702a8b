"""Resolve a ``--model`` argument: bundled weights, an advimage checkpoint, or a reference file.

- ``bundled`` / ``bundled:NAME``: weights shipped inside the package (``advimage/weights``);
- ``PATH.safetensors`` (with its ``.json`` sidecar): an advimage checkpoint;
- ``PATH.th`` / ``PATH.pt`` / ``PATH.pth``: a third-party reference model imported through the
  safe ``weights_only`` loader (see ``advimage.models.import_reference``);
- ``hf:ORG/NAME[@REVISION]`` or a folder holding a transformers ``config.json``: a Hugging Face
  image classifier (optional extra ``advimage[hf]``, see ``advimage.models.hf``);
- ``torchscript:PATH``: a ``torch.jit.save`` archive with its ``PATH.json`` sidecar; this runs
  the file's code, hence the explicit prefix (see ``advimage.models.torchscript``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from advimage.models import ImageClassifier, import_reference, load_checkpoint
from advimage.models.hf import HF_PREFIX, load_hf_model
from advimage.models.safe_files import check_file
from advimage.models.torchscript import TORCHSCRIPT_PREFIX, load_torchscript

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


def _is_hf_folder(path: Path) -> bool:
    """A folder with transformers' ``config.json`` or ``preprocessor_config.json``; the latter
    alone gets the one-line "no config.json" error, other folders the "is a directory" one."""
    return path.is_dir() and any(
        (path / name).is_file() for name in ("config.json", "preprocessor_config.json"))


def load_model(
    spec: str | Path, map_location: str = "cpu"
) -> tuple[ImageClassifier, dict[str, Any]]:
    """Load a model from a ``--model`` argument; returns the model (eval mode) and its metadata.

    A missing file, a directory, a pickled or damaged ``.safetensors`` and a sidecar that
    disagrees with its weights are one-line errors (:mod:`advimage.models.safe_files`).
    ``meta["source"]`` says where the model came from.
    """
    text = str(spec)
    if text.startswith(HF_PREFIX) or _is_hf_folder(Path(text)):
        model, meta = load_hf_model(text)
        return model.to(map_location).eval(), meta
    if text.startswith(TORCHSCRIPT_PREFIX):
        return load_torchscript(text, map_location=map_location)
    if text == "bundled" or text.startswith("bundled:"):
        name = text.split(":", 1)[1] if ":" in text else BUNDLED_DEFAULT
        model, meta = load_checkpoint(bundled_path(name), map_location=map_location)
        meta = {**meta, "source": meta.get("source") or f"bundled:{name}"}
    else:
        path = check_file(text, "model file")  # one line for a missing file or a directory
        if path.suffix in _REFERENCE_SUFFIXES:
            model = import_reference(path)
            meta = {"arch": model.arch, "source": str(path), "imported": True}
        else:
            model, meta = load_checkpoint(path, map_location=map_location)
            # an imported checkpoint's sidecar keeps the file it was converted from
            meta = {**meta, "source": meta.get("source") or str(path.resolve())}
    model.eval()
    return model, meta
