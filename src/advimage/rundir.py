"""Output folders bound to one resolved configuration (a manifest with its fingerprint).

A command that writes resumable outputs (``advimage attack``, ``advimage eval detection``)
opens its folder with :func:`open_run_dir`: the folder's ``manifest.json`` records the kind of
run, the resolved configuration (everything that changes the result), its fingerprint (sha256
of the configuration's canonical JSON) and every finished output file with its size and sha256.

* A fresh folder gets a new manifest.
* The same fingerprint resumes: files the manifest lists are reused (after checking their
  digest), anything else is recomputed.
* Another fingerprint, another kind of run, or outputs without a manifest (an older advimage)
  raise :class:`~advimage.errors.ConfigMismatchError` naming the folder and the first keys that
  differ, so old outputs are never mixed with a new configuration.

Readers (:func:`read_run_dir`) read only the files the manifest lists, never a glob of
whatever lies in the folder. Processes sharing a folder (``--shard I/N``) serialize their
manifest updates with a lock file; an output is published by an atomic rename, first writer
wins, so a listed file never changes.

Imports only the standard library and the bottom layer (:mod:`advimage.errors`,
:mod:`advimage.utils` for the atomic manifest write, :mod:`advimage.outpath`, whose
:func:`check_out`, the ``--out`` check of every command, is re-exported).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from advimage.errors import ConfigMismatchError, CorruptFileError, UserInputError
from advimage.jsonfile import read_json_object
from advimage.outpath import check_out
from advimage.utils import atomic_writer

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: updates are atomic, but not serialized
    fcntl = None  # type: ignore[assignment]

__all__ = ["FORMAT", "LOCK_NAME", "MANIFEST_NAME", "RunDir", "canonical_json", "check_out",
           "config_diff", "file_sha256", "fingerprint", "open_run_dir", "read_run_dir"]

MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".manifest.lock"
FORMAT = "advimage-run-dir/1"
_HOW = "choose another output folder (--out) or remove {path} to start over"


# ----------------------------------------------------------------------------- fingerprints
def _plain(obj: Any) -> Any:
    """JSON stand-in for values json cannot write (paths, sets, dataclasses)."""
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if hasattr(obj, "as_dict"):
        return obj.as_dict()
    raise TypeError(f"configuration value {obj!r} ({type(obj).__name__}) is not plain data")


def canonical_json(config: Any) -> str:
    """``config`` as canonical JSON: sorted keys, no spaces, tuples as lists."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=_plain)


def fingerprint(config: Any) -> str:
    """sha256 (hex) of :func:`canonical_json` of ``config``."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_ABSENT = "(absent)"


def config_diff(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` where two configurations differ, key-sorted."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[tuple[str, Any, Any]] = []
        for k in sorted(set(old) | set(new), key=str):
            key = f"{prefix}.{k}" if prefix else str(k)
            out.extend(config_diff(old.get(k, _ABSENT), new.get(k, _ABSENT), key)
                       if k in old and k in new else [(key, old.get(k, _ABSENT),
                                                        new.get(k, _ABSENT))])
        return out
    return [] if old == new else [(prefix or "(configuration)", old, new)]


def _short(value: Any, width: int = 40) -> str:
    text = value if value == _ABSENT else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


# ----------------------------------------------------------------------------- manifest
def _read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST_NAME
    if not path.exists():
        return None
    data = read_json_object(path, f"{{path}} is damaged (not JSON: {{reason}}); remove {folder} "
                                  "to start over")
    if not (isinstance(data, dict) and data.get("format") == FORMAT
            and isinstance(data.get("files"), dict) and isinstance(data.get("fingerprint"), str)):
        raise CorruptFileError(f"{path} is not an advimage manifest ({FORMAT}); remove "
                               f"{folder} to start over")
    return data


def _write_manifest(folder: Path, manifest: Mapping[str, Any]) -> None:
    with atomic_writer(folder / MANIFEST_NAME, fsync=True) as fh:
        fh.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Exclusive lock over the folder's manifest (processes sharing one run folder)."""
    with open(folder / LOCK_NAME, "a+b") as fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class RunDir:
    """An output folder bound to one configuration (see the module docstring)."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self._manifest = manifest

    @property
    def kind(self) -> str:
        """The kind of run (e.g. ``"attack"``)."""
        return str(self._manifest.get("kind"))

    @property
    def config(self) -> dict[str, Any]:
        """The resolved configuration recorded in the manifest."""
        return self._manifest.get("config", {})

    @property
    def fingerprint(self) -> str:
        """sha256 of the configuration's canonical JSON."""
        return str(self._manifest["fingerprint"])

    def refresh(self) -> None:
        """Re-read the manifest (other processes may have published files since)."""
        self._manifest = _read_manifest(self.path) or self._manifest

    def entry(self, name: str) -> dict[str, Any] | None:
        """The manifest's record of output ``name`` (a path relative to the folder), or None."""
        return self._manifest["files"].get(name)

    def has(self, name: str) -> bool:
        """Whether ``name`` is listed and on disk (a removed file is recomputed, not an error)."""
        return self.entry(name) is not None and (self.path / name).is_file()

    def verified(self, name: str) -> Path:
        """Path of listed output ``name`` after checking its size and sha256.

        Raises:
            CorruptFileError: not listed, missing, or changed since it was written.
        """
        rec = self.entry(name)
        path = self.path / name
        if rec is None:
            raise CorruptFileError(f"{path} is not listed in {self.path / MANIFEST_NAME}")
        if not path.is_file():
            raise CorruptFileError(f"{path} is missing (listed in {MANIFEST_NAME}); remove "
                                   f"{self.path} to start over")
        if path.stat().st_size != rec.get("bytes") or file_sha256(path) != rec.get("sha256"):
            raise CorruptFileError(f"{path} was changed or damaged after it was written (size "
                                   f"or sha256 differs from {MANIFEST_NAME}); remove it to "
                                   "recompute it")
        return path

    def publish(self, tmp: str | os.PathLike[str], name: str, **info: Any) -> bool:
        """Move finished file ``tmp`` to ``name`` and list it, atomically; first writer wins.

        Returns:
            True if ``tmp`` became ``name``; False if another process had published ``name``
            already (``tmp`` is removed and the listed file is kept).
        """
        tmp = Path(tmp)
        rec = {"bytes": tmp.stat().st_size, "sha256": file_sha256(tmp), **info}
        with _locked(self.path):
            self.refresh()
            if self.has(name):
                tmp.unlink(missing_ok=True)
                return False
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
            self._manifest["files"][name] = rec
            _write_manifest(self.path, self._manifest)
        return True


def _mismatch(path: Path, manifest: Mapping[str, Any], kind: str, plain: Any) -> str | None:
    if manifest.get("kind") != kind:
        return (f"{path} holds the outputs of `{manifest.get('kind')}`, not `{kind}`; "
                + _HOW.format(path=path))
    keys = config_diff(manifest.get("config"), plain)
    if not keys:
        return None
    shown = "; ".join(f"{k}: {_short(a)} -> {_short(b)}" for k, a, b in keys[:3])
    more = f" (and {len(keys) - 3} more)" if len(keys) > 3 else ""
    return (f"{path} holds results of another configuration ({shown}{more}); "
            + _HOW.format(path=path))


def open_run_dir(path: str | os.PathLike[str], kind: str, config: Mapping[str, Any], *,
                 legacy: Sequence[str] = ()) -> RunDir:
    """Open (create, or resume) output folder ``path`` for a ``kind`` run of ``config``.

    Args:
        path: The folder (created with its parents).
        kind: The kind of run (``"attack"``, ``"detection"``), recorded and checked.
        config: The resolved configuration: plain JSON values (tuples, paths, sets and
            dataclasses are converted); everything that changes the outputs.
        legacy: Glob patterns of this kind's outputs; a folder holding any of them but no
            manifest (written by an older advimage) is refused.

    Raises:
        UserInputError: ``path`` is an existing file.
        ConfigMismatchError: the folder holds another configuration's (or unknown) outputs.
        CorruptFileError: a damaged manifest.
    """
    check_out(path, "dir")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    plain = json.loads(canonical_json(dict(config)))
    fp = fingerprint(plain)
    with _locked(folder):
        manifest = _read_manifest(folder)
        if manifest is None:
            found = next((pat for pat in legacy if any(folder.glob(pat))), None)
            if found is not None:
                raise ConfigMismatchError(
                    f"{folder} holds outputs ({found}) but no {MANIFEST_NAME} (an older advimage "
                    "wrote it; its configuration is unknown); " + _HOW.format(path=folder))
            manifest = {"format": FORMAT, "kind": kind, "fingerprint": fp, "config": plain,
                        "files": {}, "created": datetime.now(UTC).isoformat(timespec="seconds")}
            _write_manifest(folder, manifest)
        else:
            problem = _mismatch(folder, manifest, kind, plain)
            if problem is not None or manifest["fingerprint"] != fp:
                raise ConfigMismatchError(problem or f"{folder / MANIFEST_NAME} does not match "
                                          "its configuration; " + _HOW.format(path=folder))
    return RunDir(folder, manifest)


def read_run_dir(path: str | os.PathLike[str], kind: str) -> RunDir:
    """Open a finished (or partial) ``kind`` output folder for reading; writes nothing.

    Raises:
        UserInputError: no manifest (not such a folder, or one of an older advimage).
        ConfigMismatchError: the folder holds another kind of run.
        CorruptFileError: a damaged manifest.
    """
    folder = Path(path)
    manifest = _read_manifest(folder)
    if manifest is None:
        raise UserInputError(f"{folder} has no {MANIFEST_NAME}: not an advimage {kind} output "
                             f"folder, or one written by an older advimage (rerun `{kind}` into "
                             "a new folder)")
    if manifest.get("kind") != kind:
        raise ConfigMismatchError(f"{folder} holds the outputs of `{manifest.get('kind')}`, "
                                  f"not `{kind}`")
    return RunDir(folder, manifest)
