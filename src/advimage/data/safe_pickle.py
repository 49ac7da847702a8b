"""A restricted unpickler for third-party data pickles (the CIFAR-10 python batches).

``pickle.load`` runs whatever callable a file names, so a doctored ``data_batch_1`` could execute
code. :func:`safe_load` only resolves the handful of globals needed to rebuild builtin containers
and numpy arrays; any other global (``os.system``, ``builtins.eval``, ...) raises ``ValueError``
naming the file and the refused global, before anything is called.
"""

from __future__ import annotations

import _codecs
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["UnsafePickleError", "safe_load", "safe_loads"]


class UnsafePickleError(ValueError):
    """A pickle names a global outside the allow-list (or is malformed); the message names it."""


def _numpy_rebuilders() -> dict[tuple[str, str], Any]:
    """The functions numpy itself names when pickling arrays, found without importing by name."""
    reconstruct = np.ndarray.__reduce__(np.zeros(1, np.uint8))[0]  # multiarray._reconstruct
    frombuffer = np.zeros(1, np.uint8).__reduce_ex__(5)[0]  # numeric._frombuffer (protocol 5)
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray,
                                           ("numpy", "dtype"): np.dtype}
    for pkg in ("numpy.core", "numpy._core"):  # numpy 1.x and 2.x spell the module differently
        allowed[(f"{pkg}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{pkg}.numeric", "_frombuffer")] = frombuffer
    # Python 3 pickles ``bytes`` with protocol < 3 as ``_codecs.encode(str, "latin1")``.
    allowed[("_codecs", "encode")] = _codecs.encode
    return allowed


_ALLOWED = _numpy_rebuilders()


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="bytes")  # CIFAR batches were pickled by Python 2
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to unpickle {self._source}: it references {module}.{name}, "
                "which is not a builtin container or numpy array (possibly malicious)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            f"refusing to unpickle {self._source}: persistent ids are not allowed")


def safe_load(path: str | os.PathLike[str]) -> Any:
    """Unpickle ``path`` allowing only builtin containers, bytes/str/numbers and numpy arrays.

    Raises:
        UnsafePickleError: (a ``ValueError``) one line naming the file when it references a
            forbidden global or is not a valid pickle.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        return _load(fh, str(path))


def safe_loads(data: bytes, source: str = "<bytes>") -> Any:
    """Like :func:`safe_load` for an in-memory pickle; ``source`` names it in errors."""
    return _load(io.BytesIO(data), source)


def _load(fh: Any, source: str) -> Any:
    try:
        return _RestrictedUnpickler(fh, source).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError,
            IndexError, KeyError, UnicodeDecodeError, MemoryError) as exc:
        raise UnsafePickleError(f"{source} is not a valid pickle file "
                         f"({type(exc).__name__}: {exc})") from None
