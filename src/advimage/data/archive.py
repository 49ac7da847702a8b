"""Unpack a downloaded tar archive safely and atomically.

Only regular files and folders under the one expected top folder are accepted: an absolute
path, a ``..`` component, a link, a device or a member outside that folder makes the whole
archive a :class:`~advimage.errors.CorruptFileError` before anything is written (and
``tarfile``'s ``data`` filter checks again while extracting). Members are unpacked into a
temporary folder beside the target, which is renamed into place only when complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath

from advimage.errors import CorruptFileError

__all__ = ["extract_tar"]

log = logging.getLogger(__name__)


def _checked_members(tar: tarfile.TarFile, archive: Path, folder: str) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    for m in members:
        p = PurePosixPath(m.name)
        bad = None
        if p.is_absolute() or ".." in p.parts:
            bad = "an absolute or '..' path"
        elif not (m.isfile() or m.isdir()):
            bad = "a link or special file"
        elif not p.parts or p.parts[0] != folder:
            bad = f"outside {folder}/"
        if bad:
            raise CorruptFileError(f"refusing to unpack {archive}: member {m.name!r} is {bad}")
    if not any(m.isfile() for m in members):
        raise CorruptFileError(f"refusing to unpack {archive}: it holds no files under {folder}/")
    return members


def extract_tar(archive: Path, root: Path, folder: str) -> Path:
    """Unpack ``archive`` (whose members all live under ``folder/``) to ``root/folder``.

    Returns:
        ``root / folder``; left untouched when it already exists.

    Raises:
        CorruptFileError: an unreadable archive or an unsafe member (one line naming both).
    """
    target = root / folder
    if target.is_dir():
        return target
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{folder}.", suffix=".extract"))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = _checked_members(tar, archive, folder)
                tar.extractall(tmp, members=members, filter="data")
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise CorruptFileError(f"cannot unpack {archive}: {exc}") from None
        try:
            os.replace(tmp / folder, target)
        except OSError:
            if not target.is_dir():  # else another process unpacked it first
                raise
        log.info("unpacked %s to %s", archive, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
