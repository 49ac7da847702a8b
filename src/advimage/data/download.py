"""Download a dataset's official files into a cache folder, checked against published SHA-256s.

``download("mnist", root)`` fetches the files listed in :mod:`advimage.data.sources` into
``root`` (default: ``$ADVIMAGE_CACHE/<name>`` or ``~/.cache/advimage/<name>``) and returns it,
laid out as the dataset's loader reads it (CIFAR archives are unpacked to their python batches).

* Atomic: bytes go to ``FILE.part``; only a file of the published size and SHA-256 is renamed to
  ``FILE``, and an archive is unpacked into a temporary folder renamed into place, so no final
  name ever holds a partial file.
* Resumable: an interrupted transfer keeps ``FILE.part``; the next attempt (up to ``attempts``
  per mirror, then the next run) asks for the rest with an HTTP ``Range`` request, and starts
  over when the server ignores it.
* One-line errors: a digest mismatch deletes the part and raises :class:`CorruptFileError`
  (exit 2) naming the file and both digests; a dead network, an HTTP error or a timeout raises
  :class:`EnvironmentFailureError` (exit 1) naming the URL.
* A file already present with the right digest (or an unpacked archive folder) is not fetched
  again. ``$ADVIMAGE_DOWNLOAD_BASE_URL`` (or ``base_url=``) replaces the official mirrors, e.g.
  with a local copy.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from advimage.data.archive import extract_tar
from advimage.data.cache import cache_dir
from advimage.data.sources import RemoteFile, source_for
from advimage.errors import CorruptFileError, EnvironmentFailureError

__all__ = ["BASE_URL_ENV", "default_root", "download", "fetch_file", "sha256_of"]

log = logging.getLogger(__name__)

BASE_URL_ENV = "ADVIMAGE_DOWNLOAD_BASE_URL"
_CHUNK = 1 << 20
Progress = Callable[[str, int, int], None]  # (file name, bytes so far, total bytes)


class _Bars:
    """A tqdm bar per file, opened at its first bytes (so failing before any byte prints none)."""

    def __init__(self) -> None:
        self._bar = None
        self._name = ""

    def __call__(self, name: str, done: int, total: int) -> None:
        if self._bar is None or name != self._name:
            from tqdm.auto import tqdm

            self.close()
            self._bar = tqdm(total=total, unit="B", unit_scale=True, desc=name, leave=False)
            self._name = name
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class _IncompleteTransferError(EnvironmentFailureError):
    """The connection ended before the whole file arrived (the ``.part`` is kept)."""


def default_root(name: str) -> Path:
    """``$ADVIMAGE_CACHE/<name>`` when set, else ``~/.cache/advimage/<name>``."""
    return cache_dir() / source_for(name).name


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of the file at ``path``, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download(
    name: str,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    split: str | None = None,
    base_url: str | None = None,
    progress: bool | Progress = False,
    timeout: float = 60.0,
    attempts: int = 3,
) -> Path:
    """Fetch (and unpack) dataset ``name``'s official files; return the folder holding them.

    Args:
        name: a dataset of :data:`~advimage.data.sources.SOURCES` (cifar10, cifar100, mnist,
            fashion-mnist, svhn).
        cache_dir: target folder (default :func:`default_root`); created when missing.
        split: fetch only the files this split needs (None: all of them).
        base_url: replaces the official mirrors (default ``$ADVIMAGE_DOWNLOAD_BASE_URL``).
        progress: True for a progress bar on stderr, or a callable called as
            ``progress(file name, bytes so far, total)`` while downloading.
        timeout: seconds a connection may stay silent before it counts as dead.
        attempts: transfers per mirror, each resuming the previous one's part.

    Raises:
        CorruptFileError: a file whose size or SHA-256 is not the published one, or an archive
            with unsafe members.
        EnvironmentFailureError: the network failed (the URL is named); parts are kept.
    """
    src = source_for(name)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_root(name)
    root.mkdir(parents=True, exist_ok=True)
    base = base_url or os.environ.get(BASE_URL_ENV) or None
    mirrors = (base,) if base else src.mirrors
    report = _Bars() if progress is True else (progress or None)
    for rf in src.files_for(split):
        if rf.extract_to and (root / rf.extract_to).is_dir():
            continue  # unpacked by an earlier run (the folder appears only when complete)
        urls = [m.rstrip("/") + "/" + rf.name for m in mirrors]
        try:
            path = fetch_file(urls, root, rf, progress=report, timeout=timeout,
                              attempts=attempts)
        finally:
            if isinstance(report, _Bars):
                report.close()
        if rf.extract_to:
            extract_tar(path, root, rf.extract_to)
    return root


def fetch_file(
    urls: list[str], root: Path, rf: RemoteFile, *, progress: Progress | None = None,
    timeout: float = 60.0, attempts: int = 3,
) -> Path:
    """Make ``root/rf.name`` hold the published file, trying ``urls`` in order; return its path."""
    final = root / rf.name
    if final.is_file():
        if final.stat().st_size == rf.size and sha256_of(final) == rf.sha256:
            return final
        log.warning("%s is not the published file (size or SHA-256 differ); downloading it "
                    "again", final)
    part = root / (rf.name + ".part")
    failures: list[str] = []
    for url in urls:
        for _ in range(max(1, attempts)):
            try:
                _transfer(url, part, rf, progress, timeout)
            except _IncompleteTransferError as exc:
                last: EnvironmentFailureError = exc
                continue  # resume from the part
            except EnvironmentFailureError as exc:
                last = exc
                break  # this mirror is down: the next one
            _verify(part, url, rf)
            os.replace(part, final)
            log.info("downloaded %s (%d bytes, SHA-256 verified)", final, rf.size)
            return final
        failures.append(str(last))
    if len(failures) == 1:
        raise last
    raise EnvironmentFailureError(f"cannot download {rf.name} from any mirror: "
                                  + "; ".join(failures))


def _verify(part: Path, url: str, rf: RemoteFile) -> None:
    got = sha256_of(part)
    if got != rf.sha256:
        part.unlink()
        raise CorruptFileError(
            f"{rf.name} downloaded from {url} has SHA-256 {got}, expected {rf.sha256} (deleted: "
            "damaged in transit or not the published file)")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _network_error(url: str, exc: BaseException) -> EnvironmentFailureError:
    return EnvironmentFailureError(f"cannot download {url}: {_reason(exc)} (network down, or "
                                   f"the server moved the file? set {BASE_URL_ENV} for a mirror)")


_NET_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError,
               socket.timeout, TimeoutError)


def _start_offset(resp: http.client.HTTPResponse, have: int, url: str) -> int:
    """Where the response body starts: ``have`` for a matching 206, 0 when the server restarts."""
    if have and resp.status == 206:
        m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
        if m and int(m.group(1)) == have:
            return have
        raise EnvironmentFailureError(f"cannot resume {url}: the server answered a request for "
                                      f"bytes {have}- with {resp.headers.get('Content-Range')!r}")
    if have:
        log.info("%s ignores Range requests: downloading it from the start", url)
    return 0


def _open(url: str, part: Path, have: int, timeout: float) -> http.client.HTTPResponse:
    """The response to a GET of ``url``, asking for bytes ``have``- when resuming."""
    headers = {"User-Agent": "advimage", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    log.info("downloading %s to %s%s", url, part, f" (resuming at byte {have})" if have else "")
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                      timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the part does not fit the server's file: start over
            part.unlink()
            raise _IncompleteTransferError(f"{url} refused to resume at byte {have}") from None
        raise _network_error(url, exc) from None
    except (*_NET_ERRORS, OSError) as exc:
        raise _network_error(url, exc) from None


def _copy_body(resp: http.client.HTTPResponse, fh: BinaryIO, done: int, url: str,
               rf: RemoteFile, progress: Progress | None) -> int:
    """Append the body to ``fh`` (stopping past the published size); return the bytes held."""
    while done <= rf.size:
        try:
            chunk = resp.read(_CHUNK)
        except (*_NET_ERRORS, OSError) as exc:
            raise _IncompleteTransferError(
                f"download of {url} broke off after {done} of {rf.size} bytes ({_reason(exc)}); "
                f"rerun to resume from {fh.name}") from None
        if not chunk:
            break
        fh.write(chunk)
        done += len(chunk)
        if progress is not None:
            progress(rf.name, min(done, rf.size), rf.size)
    return done


def _transfer(url: str, part: Path, rf: RemoteFile, progress: Progress | None,
              timeout: float) -> None:
    """One request: append the rest of ``url`` to ``part`` (or rewrite it from the start)."""
    have = part.stat().st_size if part.is_file() else 0
    if have > rf.size:
        part.unlink()
        have = 0
    if have == rf.size:
        return  # an earlier transfer got every byte; only the digest is left to check
    with _open(url, part, have, timeout) as resp:
        start = _start_offset(resp, have, url)
        with open(part, "ab" if start else "wb") as fh:
            try:
                done = _copy_body(resp, fh, start, url, rf, progress)
            finally:
                fh.flush()
                os.fsync(fh.fileno())
    if done > rf.size:
        part.unlink()
        raise CorruptFileError(f"{url} sent more than the published {rf.size} bytes of "
                               f"{rf.name} (deleted: not the published file)")
    if done < rf.size:
        raise _IncompleteTransferError(f"download of {url} stopped after {done} of {rf.size} "
                                       f"bytes; rerun to resume from {part}")
