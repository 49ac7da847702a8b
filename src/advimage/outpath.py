"""The one check of an ``--out`` argument, made by every command before any work.

A folder given where a file is expected, a file where a folder is expected, or a checkpoint
path without its suffix (which used to write ``DIR.safetensors`` next to ``DIR``) is one line
naming the path and what to give instead. Imports only the standard library and
:mod:`advimage.errors`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from advimage.errors import UserInputError

__all__ = ["check_out"]


def _check_ancestors(p: Path, option: str) -> None:
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserInputError(f"{option} {p}: {parent} is a file, not a folder")
            return


def check_out(path: str | os.PathLike[str] | None, kind: str = "dir", *,
              suffixes: Sequence[str] = (), option: str = "--out") -> Path | None:
    """Check an output path before any work; creates nothing.

    Args:
        path: The path given (None, an option left out, passes through).
        kind: ``"dir"`` a folder (an existing regular file is refused); ``"file"`` a file
            (an existing folder is refused, and with ``suffixes`` a path not ending in one of
            them, e.g. ``--out DIR`` where a ``.safetensors`` file is expected); ``"prefix"``
            a path prefix that gets suffixes appended (an existing folder is refused).
        suffixes: Allowed file suffixes for ``kind="file"`` (case-insensitive).
        option: The option's name, for the message.

    Raises:
        UserInputError: one line naming the path and what to give instead.
    """
    if path is None:
        return None
    p = Path(path)
    if kind == "dir":
        if p.exists() and not p.is_dir():
            raise UserInputError(f"{option} {p} is an existing file; give a folder")
    elif kind in ("file", "prefix"):
        if p.is_dir():
            want = f"a file path ending in {suffixes[0]}" if suffixes else "a file path"
            raise UserInputError(f"{option} {p} is a folder; give {want}")
        if kind == "file" and suffixes and p.suffix.lower() not in {s.lower() for s in suffixes}:
            raise UserInputError(f"{option} {p} must end in {' or '.join(suffixes)} "
                                 f"(e.g. {p.with_name(p.name + suffixes[0])})")
    else:  # a programming error in a command, not user input
        raise TypeError(f"check_out: unknown kind {kind!r}")
    _check_ancestors(p, option)
    return p
