"""Dataset downloads against a loopback HTTP server serving files generated in each official format.

The published checksums are replaced by the generated files' own (``SOURCES`` is patched), so
the same code that fetches ``cifar-10-python.tar.gz`` from Toronto is exercised end to end:
streaming to ``.part``, Range resumption, digest checks, atomic rename, safe unpacking, loading.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import re
import socket
import struct
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from advimage.cli import main
from advimage.data import load_dataset
from advimage.data.download import BASE_URL_ENV, download, fetch_file
from advimage.data.sources import SOURCES, DatasetSource, RemoteFile
from advimage.errors import CorruptFileError, EnvironmentFailureError
from cli_helpers import error_message


# ------------------------------------------------------------------------------ loopback server
class _Server:
    """Serves ``files`` (name -> bytes); can truncate, ignore Range, and records requests."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: dict[str, int] = {}  # name -> times left to cut the body in half
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's spelling)
                name = self.path.rsplit("/", 1)[-1]
                rng = self.headers.get("Range")
                server.requests.append((name, rng))
                if name not in server.files:
                    self.send_error(404)
                    return
                body, start = server.files[name], 0
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and not server.ignore_range:
                    start = int(m.group(1))
                    self.send_response(206)
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                rest = body[start:]
                self.send_header("Content-Length", str(len(rest)))
                self.end_headers()
                if server.truncate.get(name, 0) > 0:
                    server.truncate[name] -= 1
                    rest = rest[: len(rest) // 2]  # then the connection closes early
                    self.close_connection = True
                self.wfile.write(rest)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data/"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    def publish(self, monkeypatch: pytest.MonkeyPatch, name: str, files: dict[str, bytes],
                extract_to: str | None = None, splits: dict[str, str] | None = None) -> None:
        """Serve ``files`` as dataset ``name``'s official files, with their true digests."""
        self.files.update(files)
        entries = tuple(RemoteFile(f, len(b), hashlib.sha256(b).hexdigest(),
                                   split=(splits or {}).get(f), extract_to=extract_to)
                        for f, b in files.items())
        monkeypatch.setitem(SOURCES, name, DatasetSource(name, ("http://unused.invalid/",),
                                                         entries))


@pytest.fixture()
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Server]:
    srv = _Server()
    srv.thread.start()
    monkeypatch.setenv(BASE_URL_ENV, srv.url)
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


# ------------------------------------------------------------------- files in the official formats
def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _rgb_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8)


def _cifar10(rng: np.random.Generator) -> tuple[dict[str, bytes], np.ndarray, list[int]]:
    members, test = {}, _rgb_rows(rng, 6)
    labels = [3, 1, 4, 1, 5, 9]
    for i in range(1, 6):
        members[f"cifar-10-batches-py/data_batch_{i}"] = pickle.dumps(
            {b"data": _rgb_rows(rng, 2), b"labels": [i, i + 1]}, protocol=2)
    members["cifar-10-batches-py/test_batch"] = pickle.dumps(
        {b"batch_label": b"testing batch 1 of 1", b"data": test, b"labels": labels}, protocol=2)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
             b"ship", b"truck"]
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps({b"label_names": names}, 2)
    return {"cifar-10-python.tar.gz": _tar_gz(members)}, test, labels


def _cifar100(rng: np.random.Generator) -> tuple[dict[str, bytes], np.ndarray, list[int]]:
    test, labels = _rgb_rows(rng, 4), [0, 99, 42, 7]
    meta = {b"fine_label_names": [f"class{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"super{i}".encode() for i in range(20)]}
    members = {
        "cifar-100-python/train": pickle.dumps({b"data": _rgb_rows(rng, 2),
                                                b"fine_labels": [1, 2],
                                                b"coarse_labels": [0, 0]}, protocol=2),
        "cifar-100-python/test": pickle.dumps({b"data": test, b"fine_labels": labels,
                                               b"coarse_labels": [0, 1, 2, 3]}, protocol=2),
        "cifar-100-python/meta": pickle.dumps(meta, protocol=2),
    }
    return {"cifar-100-python.tar.gz": _tar_gz(members)}, test, labels


def _idx(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I",
                                                                    *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def _mnist_like(rng: np.random.Generator) -> tuple[dict[str, bytes], np.ndarray, list[int]]:
    test, labels = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), [7, 2, 1, 0, 4]
    files = {"train-images-idx3-ubyte.gz": _idx(rng.integers(0, 256, (3, 28, 28))),
             "train-labels-idx1-ubyte.gz": _idx(np.array([5, 0, 4])),
             "t10k-images-idx3-ubyte.gz": _idx(test),
             "t10k-labels-idx1-ubyte.gz": _idx(np.array(labels))}
    return files, test, labels


def _svhn(rng: np.random.Generator) -> tuple[dict[str, bytes], np.ndarray, list[int]]:
    from scipy.io import savemat

    test = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    y = np.array([[10], [1], [9], [10]], dtype=np.uint8)  # 10 is the digit 0
    files = {}
    for split, x, lab in (("train", test[:2], y[:2]), ("test", test, y)):
        buf = io.BytesIO()
        savemat(buf, {"X": x.transpose(1, 2, 3, 0), "y": lab})
        files[f"{split}_32x32.mat"] = buf.getvalue()
    return files, test, [0, 1, 9, 0]


def _expected_images(name: str, raw: np.ndarray) -> np.ndarray:
    if name.startswith("cifar"):
        raw = raw.reshape(-1, 3, 32, 32)
    elif name == "svhn":
        raw = raw.transpose(0, 3, 1, 2)
    else:
        raw = raw[:, None]
    return raw.astype(np.float32) / 255.0


_FORMATS = {
    "cifar10": (_cifar10, "cifar-10-batches-py"),
    "cifar100": (_cifar100, "cifar-100-python"),
    "mnist": (_mnist_like, None),
    "fashion-mnist": (_mnist_like, None),
    "svhn": (_svhn, None),
}


def _publish(server: _Server, monkeypatch: pytest.MonkeyPatch, name: str,
             seed: int = 0) -> tuple[dict[str, bytes], np.ndarray, list[int]]:
    make, folder = _FORMATS[name]
    files, test, labels = make(np.random.default_rng(seed))
    splits = {f: ("train" if f.startswith("train") else "test") for f in files} \
        if folder is None else None
    server.publish(monkeypatch, name, files, extract_to=folder, splits=splits)
    return files, test, labels


# ---------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", sorted(_FORMATS))
def test_download_then_load_gives_the_served_images(server, monkeypatch, tmp_path, name):
    files, test, labels = _publish(server, monkeypatch, name)
    ds = load_dataset(name, "test", data_root=tmp_path / "d", download=True)
    x, y = ds.tensors()
    np.testing.assert_array_equal(x.numpy(), _expected_images(name, test))
    assert y.tolist() == labels
    left = sorted(p.name for p in (tmp_path / "d").iterdir())
    assert not [p for p in left if p.endswith(".part") or ".extract" in p]
    if _FORMATS[name][1] is None:  # only the test split's files were fetched
        assert left == sorted(f for f in files if not f.startswith("train"))
    else:
        assert left == sorted([next(iter(files)), _FORMATS[name][1]])
    fetched = len(server.requests)
    load_dataset(name, "test", data_root=tmp_path / "d", download=True)  # already there
    assert len(server.requests) == fetched


def test_without_data_root_the_cache_folder_is_used(server, monkeypatch, tmp_path):
    _, test, _ = _publish(server, monkeypatch, "mnist")
    monkeypatch.setenv("ADVIMAGE_CACHE", str(tmp_path / "cache"))
    ds = load_dataset("mnist", "test", download=True)
    assert (tmp_path / "cache" / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()
    again = load_dataset("mnist", "test")  # no download: the earlier one is found
    assert len(again) == len(ds) == len(test)


def test_truncated_transfer_keeps_only_the_part_and_a_rerun_resumes(server, monkeypatch,
                                                                    tmp_path):
    files, _, _ = _publish(server, monkeypatch, "cifar10")
    name = "cifar-10-python.tar.gz"
    server.truncate[name] = 1
    with pytest.raises(EnvironmentFailureError, match=r"stopped after \d+ of \d+ bytes") as ei:
        download("cifar10", tmp_path, attempts=1)
    assert "\n" not in str(ei.value) and ei.value.exit_code == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [name + ".part"]
    half = (tmp_path / (name + ".part")).stat().st_size
    assert 0 < half < len(files[name])
    download("cifar10", tmp_path)
    assert server.requests[-1] == (name, f"bytes={half}-")
    assert (tmp_path / name).read_bytes() == files[name]
    assert (tmp_path / "cifar-10-batches-py" / "test_batch").is_file()


def test_a_broken_transfer_is_resumed_within_one_call(server, monkeypatch, tmp_path):
    files, _, _ = _publish(server, monkeypatch, "mnist")
    server.truncate["t10k-images-idx3-ubyte.gz"] = 2
    seen: list[tuple[str, int, int]] = []
    download("mnist", tmp_path, split="test",  # 3 attempts: two cut short, one resumed
             progress=lambda *a: seen.append(a))
    size = len(files["t10k-images-idx3-ubyte.gz"])
    assert seen[-1] == ("t10k-labels-idx1-ubyte.gz", len(files["t10k-labels-idx1-ubyte.gz"]),
                        len(files["t10k-labels-idx1-ubyte.gz"]))
    assert ("t10k-images-idx3-ubyte.gz", size, size) in seen
    ranges = [r for n, r in server.requests if n == "t10k-images-idx3-ubyte.gz"]
    assert ranges[0] is None and all(r and r.startswith("bytes=") for r in ranges[1:])
    assert (tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes() == \
        files["t10k-images-idx3-ubyte.gz"]


def test_a_server_that_ignores_range_is_downloaded_from_the_start(server, monkeypatch,
                                                                  tmp_path):
    files, _, _ = _publish(server, monkeypatch, "svhn")
    server.ignore_range = True
    (tmp_path / "test_32x32.mat.part").write_bytes(b"stale bytes of another attempt")
    download("svhn", tmp_path, split="test")
    assert (tmp_path / "test_32x32.mat").read_bytes() == files["test_32x32.mat"]
    assert not (tmp_path / "test_32x32.mat.part").exists()


def test_wrong_checksum_is_one_line_and_leaves_no_file(server, monkeypatch, tmp_path, capsys):
    files, _, _ = _publish(server, monkeypatch, "mnist")
    rf = SOURCES["mnist"].files[2]
    assert rf.name == "t10k-images-idx3-ubyte.gz"
    bad = RemoteFile(rf.name, rf.size, "0" * 64, split="test")
    with pytest.raises(CorruptFileError) as ei:
        fetch_file([server.url + rf.name], tmp_path, bad)
    msg = str(ei.value)
    assert "\n" not in msg and rf.name in msg and "0" * 64 in msg
    assert hashlib.sha256(files[rf.name]).hexdigest() in msg
    assert list(tmp_path.iterdir()) == []
    # the same through the CLI: exit 2, one line
    monkeypatch.setitem(SOURCES, "mnist", DatasetSource("mnist", ("http://x.invalid/",),
                                                        (bad,)))
    rc = main(["models", "eval", "--model", "bundled", "--data", "mnist", "--download",
               "--data-root", str(tmp_path / "cli"), "--no-progress"])
    assert rc == 2 and "SHA-256" in error_message(capsys)
    assert not (tmp_path / "cli" / rf.name).exists()


def test_dead_server_is_one_line_exit_1_through_the_cli(monkeypatch, tmp_path, capsys):
    url = _closed_port_url()
    monkeypatch.setenv(BASE_URL_ENV, url)
    rc = main(["models", "eval", "--model", "bundled", "--data", "mnist", "--download",
               "--data-root", str(tmp_path), "--no-progress"])
    assert rc == 1
    msg = error_message(capsys)
    assert msg.startswith(f"cannot download {url}t10k-images-idx3-ubyte.gz: "), msg
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".part")]


def test_missing_file_and_dead_mirror_fall_through_to_the_next_mirror(server, monkeypatch,
                                                                      tmp_path):
    files, _, _ = _publish(server, monkeypatch, "fashion-mnist")
    rf = SOURCES["fashion-mnist"].files[3]
    urls = [_closed_port_url() + rf.name, server.url + rf.name]
    assert fetch_file(urls, tmp_path, rf).read_bytes() == files[rf.name]
    gone = RemoteFile("nowhere.gz", 10, "0" * 64)
    with pytest.raises(EnvironmentFailureError, match=r"HTTP 404") as ei:
        fetch_file([server.url + gone.name], tmp_path, gone)
    assert server.url + "nowhere.gz" in str(ei.value)


def test_a_damaged_final_file_is_downloaded_again(server, monkeypatch, tmp_path):
    files, _, _ = _publish(server, monkeypatch, "mnist")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"damaged")
    download("mnist", tmp_path, split="test", progress=True)  # a tqdm bar on stderr
    assert (tmp_path / "t10k-labels-idx1-ubyte.gz").read_bytes() == \
        files["t10k-labels-idx1-ubyte.gz"]


@pytest.mark.parametrize("member", ["../evil", "/tmp/evil", "cifar-10-batches-py/../../evil",
                                    "elsewhere/file", "symlink"])
def test_unsafe_tar_members_are_refused(server, monkeypatch, tmp_path, member):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        ok = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        ok.size = 1
        tar.addfile(ok, io.BytesIO(b"x"))
        info = tarfile.TarInfo("cifar-10-batches-py/link" if member == "symlink" else member)
        if member == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        else:
            info.size = 4
        tar.addfile(info, io.BytesIO(b"evil") if member != "symlink" else None)
    server.publish(monkeypatch, "cifar10", {"cifar-10-python.tar.gz": buf.getvalue()},
                   extract_to="cifar-10-batches-py")
    root = tmp_path / "root"
    with pytest.raises(CorruptFileError, match="refusing to unpack") as ei:
        download("cifar10", root)
    assert "\n" not in str(ei.value)
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-python.tar.gz"]
    assert not (tmp_path / "evil").exists()


def test_a_dataset_without_a_source_cannot_be_downloaded(tmp_path):
    with pytest.raises(ValueError, match="cannot be downloaded; --download works for cifar10"):
        load_dataset("digits", "test", download=True)


def test_a_full_disk_is_one_line_exit_1_and_no_final_file(server, monkeypatch, tmp_path,
                                                          capsys):
    import errno

    from advimage.data import download as download_module

    _publish(server, monkeypatch, "mnist")
    real_open = open

    class _Full:
        def __init__(self, fh):
            self._fh = fh
            self.name = fh.name

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._fh.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device", self.name)

        def __getattr__(self, attr):
            return getattr(self._fh, attr)

    def full_open(path, mode="r", *args, **kw):
        fh = real_open(path, mode, *args, **kw)
        return _Full(fh) if "b" in mode and ("a" in mode or "w" in mode) else fh

    monkeypatch.setattr(download_module, "open", full_open, raising=False)
    rc = main(["models", "eval", "--model", "bundled", "--data", "mnist", "--download",
               "--data-root", str(tmp_path), "--no-progress"])
    assert rc == 1
    assert error_message(capsys).startswith("no space left on device")
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".part")]
