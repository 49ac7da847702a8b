"""Small shared utilities: device choice, seeding, run metadata, atomic writes."""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_writer",
    "chunk_sizes",
    "resolve_device",
    "run_metadata",
    "seed_everything",
    "write_json",
]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Map ``auto|cpu|cuda[:i]`` to a ``torch.device``; ``cuda`` without a GPU is a ValueError."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; use auto, cpu or cuda")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _git_hash() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=5,
        cwd=Path(__file__).resolve().parent,
    )
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def run_metadata(
    device: torch.device | str | None = None, seed: int | None = None
) -> dict[str, Any]:
    """Versions, git hash, device and seed: written into every run directory."""
    from advimage import __version__

    return {
        "advimage_version": __version__,
        "git_hash": _git_hash(),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device) if device is not None else None,
        "num_threads": torch.get_num_threads(),
        "seed": seed,
    }


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once: os.umask can only be read by setting it


@contextmanager
def atomic_writer(
    path: str | os.PathLike[str], *, binary: bool = False, newline: str | None = None,
    fsync: bool = False,
) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; rename it onto ``path`` on success.

    The old ``path`` stays as it was until the new content is complete: an error (a full disk,
    a bug, Ctrl-C) inside the ``with`` block removes the temporary file and leaves ``path``
    untouched, never truncated or half written.

    Args:
        path: destination; missing parent folders are created.
        binary: open in ``"wb"`` instead of text mode (UTF-8).
        newline: text mode's ``newline`` (``""`` for the ``csv`` module).
        fsync: flush the content to disk before the rename (for files other processes rely
            on, such as a run folder's manifest).

    Yields:
        The open temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would make exports private
        if binary:
            fh: IO[Any] = os.fdopen(fd, "wb")
        else:
            fh = os.fdopen(fd, "w", encoding="utf-8", newline=newline)
        with fh:
            yield fh
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename (never a half file)."""
    with atomic_writer(path) as fh:
        fh.write(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename (never a half file)."""
    with atomic_writer(path, binary=True) as fh:
        fh.write(data)
    return Path(path)


def write_json(path: str | os.PathLike[str], obj: Mapping[str, Any] | list[Any]) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def chunk_sizes(rows: int, max_rows: int | None) -> list[int]:
    """Sizes of the fewest near-equal chunks (they differ by at most 1) of ``<= max_rows`` rows.

    ``None`` (or ``rows <= max_rows``) gives one chunk of all ``rows``.
    """
    if max_rows is None or rows <= max_rows:
        return [rows]
    parts = -(-rows // max_rows)  # ceil
    return [rows // parts + (i < rows % parts) for i in range(parts)]
