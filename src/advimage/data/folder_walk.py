"""The bounded, link-safe walk of an ImageFolder tree (see :mod:`advimage.data.folder`).

A directory symlink below a class folder is never followed (one link to a parent folder would
otherwise repeat the tree, and two make the walk endless); a class folder that is itself a link
is used unless it points at the tree or one of its parents. Only regular files (or links to
them) are candidates: sockets, FIFOs and broken links are reported as skipped, never opened.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from advimage.errors import UserInputError

__all__ = ["MAX_DEPTH", "MAX_FILES", "SPLIT_FOLDERS", "Scan", "find_split_dir", "scan_tree"]

MAX_FILES = 5_000_000  # files listed before the walk stops with an error (ImageNet-1k: 1.3 M)
MAX_DEPTH = 32  # folder levels below a class folder before the walk stops with an error
SPLIT_FOLDERS = ("train", "test", "val")  # names that mark a tree as split into subsets


@dataclass
class Scan:
    """The class folders of one split folder and its candidate and kept image files."""

    root: Path
    folders: list[str]
    candidates: list[str] = field(default_factory=list)
    candidate_ids: list[int] = field(default_factory=list)  # folder index of each candidate
    links: list[str] = field(default_factory=list)  # directory links not followed
    skipped: list[str] = field(default_factory=list)  # non-image, corrupt or special files
    files: list[str] = field(default_factory=list)
    folder_ids: list[int] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)

    def keep(self, sizes: list[tuple[int, int] | None]) -> None:
        """Keep the candidates whose probed ``(width, height)`` is not None."""
        for path, k, size in zip(self.candidates, self.candidate_ids, sizes, strict=True):
            if size is None:
                self.skipped.append(path)
            else:
                self.files.append(path)
                self.folder_ids.append(k)
                self.sizes.append(size)

    def used_folders(self) -> list[str]:
        """Class folders holding at least one kept image, sorted."""
        return [self.folders[k] for k in sorted(set(self.folder_ids))]

    def empty_folders(self) -> list[str]:
        """Class folders without any kept image, sorted."""
        used = set(self.folder_ids)
        return [f for k, f in enumerate(self.folders) if k not in used]


def _subfolders(root: Path) -> list[str]:
    with os.scandir(root) as it:
        return sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())


def find_split_dir(root: Path, split: str) -> Path:
    """The folder holding the class folders of ``split`` (``"all"``: ``root`` itself).

    Raises:
        UserInputError: ``root`` is missing or has no sub-folders, ``split`` is not among its
            split folders, or a tree without split folders is asked for anything but ``"all"``.
    """
    if not root.is_dir():
        raise UserInputError(f"image folder {root} does not exist or is not a directory")
    subs = _subfolders(root)
    if not subs:
        raise UserInputError(f"image folder {root} has no class sub-folders (expected "
                             "<root>/<class>/<image> or <root>/<split>/<class>/<image>)")
    present = [s for s in SPLIT_FOLDERS if s in subs]
    if split == "all":
        if present:
            raise UserInputError(f"image folder {root} is split into {', '.join(present)}: "
                                 f"choose one (--split {present[0]}) instead of 'all'")
        return root
    if split in present:
        return root / split
    if present:
        raise UserInputError(f"image folder {root} has no {split}/ folder (its splits: "
                             f"{', '.join(present)})")
    raise UserInputError(f"image folder {root} has no train/ or test/ split folders, so its "
                         "images may include training images; pass --split all (split='all') "
                         "to use all of them")


def _class_folders(split_dir: Path, scan_links: list[str]) -> list[str]:
    base = os.path.realpath(split_dir)
    folders = []
    for name in _subfolders(split_dir):
        path = split_dir / name
        if path.is_symlink():
            real = os.path.realpath(path)
            if base == real or base.startswith(real.rstrip(os.sep) + os.sep):
                scan_links.append(str(path))  # points back up the tree: a cycle
                continue
        folders.append(name)
    return folders


def _walk(scan: Scan, folder: str, k: int, depth: int, max_files: int, max_depth: int) -> None:
    """Files of ``folder`` (sorted), then its sub-folders, depth first; no directory links."""
    with os.scandir(folder) as it:
        entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    subdirs = []
    for e in entries:
        if e.is_symlink() and e.is_dir():
            scan.links.append(e.path)
        elif e.is_dir(follow_symlinks=False):
            subdirs.append(e.path)
        elif e.is_file():
            scan.candidates.append(e.path)
            scan.candidate_ids.append(k)
            if len(scan.candidates) > max_files:
                raise UserInputError(
                    f"image folder {scan.root} holds more than {max_files:,} files; the walk "
                    "stops there (point --data-root at a smaller tree, or raise max_files=)")
        else:
            scan.skipped.append(e.path)  # broken link, FIFO, socket, device
    for sub in subdirs:
        if depth + 1 > max_depth:
            raise UserInputError(f"image folder {scan.root}: {sub} is nested more than "
                                 f"{max_depth} folders below its class folder; the walk stops "
                                 "there (raise max_depth= if this is intended)")
        _walk(scan, sub, k, depth + 1, max_files, max_depth)


def scan_tree(split_dir: Path, *, max_files: int = MAX_FILES,
              max_depth: int = MAX_DEPTH) -> Scan:
    """List the candidate image files of every class folder of ``split_dir`` (not probed)."""
    links: list[str] = []
    folders = _class_folders(split_dir, links)
    if not folders:
        raise UserInputError(f"image folder {split_dir} has no class sub-folders (expected "
                             "<root>/<class>/<image> or <root>/<split>/<class>/<image>)")
    scan = Scan(split_dir, folders, links=links)
    for k, name in enumerate(folders):
        _walk(scan, str(split_dir / name), k, 0, max_files, max_depth)
    return scan
