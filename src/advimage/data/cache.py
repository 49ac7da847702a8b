"""On-disk cache of decoded image arrays (so 60k CIFAR-10 PNGs are decoded once, not per run).

Entries live under ``$ADVIMAGE_CACHE`` or ``~/.cache/advimage/``; the source folder is never
written (it may be read-only). A key hashes the resolved source path and every file's relative
name, size and modification time, so any change to the data invalidates the entry. Writes go to
a temporary file in the cache folder and are renamed into place, so a crashed or concurrent run
never leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

__all__ = ["cache_dir", "cache_key", "load_cached", "save_cached"]

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """``$ADVIMAGE_CACHE`` when set, else ``~/.cache/advimage``."""
    env = os.environ.get("ADVIMAGE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "advimage"


def cache_key(root: Path, entries: Iterable[tuple[str, int, int]], extra: str = "") -> str:
    """A hex digest of ``root`` (resolved) and ``(relative path, size, mtime_ns)`` per file."""
    h = hashlib.sha256()
    h.update(f"{root.resolve()}\0{extra}\0".encode())
    h.update("\n".join(f"{rel}\0{size}\0{mtime}" for rel, size, mtime in entries).encode())
    return h.hexdigest()[:24]


def load_cached(name: str) -> np.ndarray | None:
    """The array saved as ``name``, or ``None`` when absent or unreadable."""
    path = cache_dir() / f"{name}.npy"
    if not path.is_file():
        return None
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:  # truncated/corrupt entry: rebuild it
        log.warning("ignoring unreadable cache entry %s (%s)", path, exc)
        return None


def save_cached(name: str, array: np.ndarray) -> Path | None:
    """Atomically write ``array`` as ``name``; warn (not fail) when the cache is unwritable."""
    folder = cache_dir()
    path = folder / f"{name}.npy"
    tmp_name = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{name}.", suffix=".tmp",
                                         delete=False) as tmp:
            tmp_name = tmp.name
            np.save(tmp, array, allow_pickle=False)
        os.replace(tmp_name, path)
        log.info("cached decoded images at %s", path)
        return path
    except OSError as exc:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)
        warnings.warn(f"could not write the dataset cache in {folder} ({exc}); set "
                      "ADVIMAGE_CACHE to a writable folder to avoid decoding again",
                      stacklevel=3)
        return None
