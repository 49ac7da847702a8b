"""Atomic writes: the old file stays whole until the new one is complete, with the usual
permissions, and no temporary file is left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from advimage.eval.plots import save_png, subplots
from advimage.utils import atomic_write_bytes, atomic_write_text, atomic_writer


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_an_error_while_writing_keeps_the_old_file(tmp_path) -> None:
    path = tmp_path / "out.csv"
    atomic_write_text(path, "old,content\n")
    with pytest.raises(RuntimeError, match="mid-write"), atomic_writer(path, newline="") as fh:
        fh.write("new,con")
        raise RuntimeError("mid-write")
    assert path.read_text() == "old,content\n"
    assert _leftovers(tmp_path) == []


def test_written_files_get_the_umask_permissions_not_mkstemp_0600(tmp_path) -> None:
    mask = os.umask(0o022)
    os.umask(mask)
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o666 & ~mask


def test_save_png_failing_midway_keeps_the_old_png(tmp_path, monkeypatch) -> None:
    path = tmp_path / "fig.png"
    fig, ax = subplots()
    ax.plot([0, 1], [0, 1])
    save_png(fig, path, dpi=40)
    before = path.read_bytes()
    assert before.startswith(b"\x89PNG")
    fig, ax = subplots()

    def broken(fh, **_kw):  # noqa: ANN001, ANN003, ANN202
        fh.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(OSError, match="No space"):
        save_png(fig, path, dpi=40)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []
