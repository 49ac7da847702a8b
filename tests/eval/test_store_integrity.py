"""The result store checks itself, exports are atomic, partial runs say so, a full disk keeps
the committed batches, and stores written before the per-batch digests still read."""

from __future__ import annotations

import errno
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from store_helpers import build_runs, cli, dump, rows

from advimage.cli import main
from advimage.errors import CorruptFileError
from advimage.eval.store import ResultStore

EXPORTS = ("results.csv", "samples.csv", "results.json", "detector_scores.csv", "report.html")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    return build_runs(tmp_path_factory.mktemp("store"))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _exports(run: Path) -> dict[str, bytes]:
    return {name: (run / name).read_bytes() for name in EXPORTS}


def _error(capsys, rc: int, code: int = 2) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == code, err
    assert err.startswith("advimage: error:") and "\n" not in err, err
    return err


def _temp_files(run: Path) -> list[Path]:
    return sorted(run.glob(".*.tmp"))


def test_zero_byte_store_is_refused_and_exports_are_kept(runs, tmp_path, capsys) -> None:
    run = _copy(runs[1], tmp_path / "run")
    before = _exports(run)
    (run / "results.sqlite").write_bytes(b"")
    capsys.readouterr()
    err = _error(capsys, cli("run", "--resume", str(run)))
    assert f"{run / 'results.sqlite'}: empty file (0 bytes)" in err
    err = _error(capsys, main(["report", str(run)]))
    assert "results.sqlite: empty file" in err
    assert _exports(run) == before  # nothing truncated or overwritten
    (run / "results.sqlite").write_bytes(b"not a database, just text" * 100)
    assert "not a readable SQLite result store" in _error(capsys, main(["report", str(run)]))
    assert _exports(run) == before


def test_rows_deleted_from_a_finished_batch_are_refused(runs, tmp_path, capsys) -> None:
    """Issue 19 item 5: 190 of 200 rows used to be reported as n=190."""
    run = _copy(runs[1], tmp_path / "run")
    before = _exports(run)
    con = sqlite3.connect(str(run / "results.sqlite"))
    with con:
        con.execute("DELETE FROM samples WHERE sample = 5 AND attack = 'fgsm@0.1'")
    con.close()
    capsys.readouterr()
    err = _error(capsys, main(["report", str(run)]))
    assert "batch 1 holds 7 sample rows, 8 were stored when it finished" in err
    assert _exports(run) == before
    with pytest.raises(CorruptFileError, match="batch 1 holds 7"):
        ResultStore(run / "results.sqlite")


def test_eval_robust_resume_refuses_a_damaged_store_and_keeps_robust_csv(tmp_path,
                                                                         capsys) -> None:
    out = tmp_path / "robust"
    argv = ["eval", "robust", "--model", "bundled", "--data", "digits", "--limit", "8",
            "--batch-size", "4", "--attacks", "fgsm", "--eps", "0.1", "--out", str(out)]
    assert cli(*argv) == 0
    csv_before = (out / "robust.csv").read_bytes()
    assert csv_before.splitlines()[0].endswith(b",partial")
    assert csv_before.splitlines()[1].endswith(b",False")
    assert json.loads((out / "robust.json").read_text())["partial"] is False
    (out / "results.sqlite").write_bytes(b"")
    capsys.readouterr()
    assert "empty file (0 bytes)" in _error(capsys, cli(*argv, "--resume"))
    assert (out / "robust.csv").read_bytes() == csv_before


def test_an_error_mid_export_keeps_the_old_files(runs, tmp_path, capsys, monkeypatch) -> None:
    run = _copy(runs[1], tmp_path / "run")
    before = _exports(run)
    real = ResultStore.iter_samples

    def disk_full(self):  # noqa: ANN001, ANN202
        yield from list(real(self))[:3]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ResultStore, "iter_samples", disk_full)
    capsys.readouterr()
    err = _error(capsys, main(["report", str(run)]), code=1)
    assert "no space left on device" in err
    assert (run / "samples.csv").read_bytes() == before["samples.csv"]  # not half written
    assert _temp_files(run) == []


class _FullDisk:
    """A connection whose second ``executemany`` of a transaction fails as a full disk does."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn, self._calls = conn, 0

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._conn, name)

    def __enter__(self) -> _FullDisk:
        self._conn.__enter__()
        return self

    def __exit__(self, *exc: object) -> bool:
        return self._conn.__exit__(*exc)

    def executemany(self, *args):  # noqa: ANN002, ANN201
        self._calls += 1
        if self._calls == 2:  # the batch row and its samples are already inserted
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.executemany(*args)


def test_disk_full_in_the_store_keeps_committed_batches(runs, tmp_path, capsys,
                                                        monkeypatch) -> None:
    cfg, whole, _ = runs
    real = ResultStore.write_batch

    def write_batch(self, batch, *args):  # noqa: ANN001, ANN202
        if batch != 2:
            return real(self, batch, *args)
        conn, self.conn = self.conn, _FullDisk(self.conn)
        try:
            return real(self, batch, *args)
        finally:
            self.conn = conn

    monkeypatch.setattr(ResultStore, "write_batch", write_batch)
    run = tmp_path / "run"
    capsys.readouterr()
    err = _error(capsys, cli("run", str(cfg), "--out", str(run)), code=1)
    assert "no space left on device" in err and "committed so far are kept" in err
    with ResultStore(run / "results.sqlite") as store:  # verifies: nothing half written
        assert store.done_batches() == {0, 1}
        assert rows(run / "results.sqlite", "SELECT COUNT(*) FROM samples WHERE batch = 2") \
            == [(0,)]
    monkeypatch.setattr(ResultStore, "write_batch", real)
    assert cli("run", "--resume", str(run)) == 0
    assert dump(run) == dump(whole)


def test_a_partial_run_says_so_in_every_export_and_its_last_line(runs, tmp_path,
                                                                 capsys) -> None:
    cfg, whole, _ = runs
    run = tmp_path / "run"
    capsys.readouterr()
    assert cli("run", str(cfg), "--out", str(run), "--shard", "1/2") == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.endswith(f"; partial: 2 of 3 batches done; run the other shards or --resume "
                         f"{run}")
    for name in ("results.csv", "samples.csv", "detector_scores.csv"):
        lines = (run / name).read_text().splitlines()
        assert lines[0].endswith(",partial") and all(ln.endswith(",True") for ln in lines[1:])
    doc = json.loads((run / "results.json").read_text())
    assert (doc["partial"], doc["batches_done"], doc["batches_total"],
            doc["batches_missing"]) == (True, 2, 3, 1)
    assert "Partial results: 2 of 3 batches done" in (run / "report.html").read_text()
    assert main(["report", str(run)]) == 0
    assert "partial: 2 of 3" in capsys.readouterr().out
    assert cli("run", "--resume", str(run), "--shard", "2/2") == 0
    assert "; partial:" not in capsys.readouterr().out
    assert (run / "results.csv").read_text().splitlines()[1].endswith(",False")
    assert dump(run) == dump(whole)


def _to_version_1(db: Path) -> None:
    """Rewrite a store as advimage wrote it before the per-batch digests."""
    con = sqlite3.connect(str(db))
    with con:
        con.execute("ALTER TABLE batches DROP COLUMN rows")
        con.execute("ALTER TABLE batches DROP COLUMN digest")
        con.execute("DROP INDEX samples_batch")
        con.execute("DELETE FROM meta WHERE key IN ('store_version', 'setup_digest', "
                    "'n_batches')")
    con.close()


def test_a_store_without_digests_is_read_checked_and_upgraded(runs, tmp_path, capsys) -> None:
    _, whole, killed = runs
    old = _copy(whole, tmp_path / "old")
    _to_version_1(old / "results.sqlite")
    assert main(["report", str(old)]) == 0
    doc = json.loads((old / "results.json").read_text())
    assert (doc["partial"], doc["batches_done"], doc["batches_total"]) == (False, 3, None)
    assert dump(old) == dump(whole)

    resumed = _copy(killed, tmp_path / "resumed")
    _to_version_1(resumed / "results.sqlite")
    assert cli("run", "--resume", str(resumed)) == 0
    with ResultStore(resumed / "results.sqlite") as store:
        assert store.version == 2 and store.progress()["batches_total"] == 3
    assert dump(resumed) == dump(whole)

    con = sqlite3.connect(str(old / "results.sqlite"))
    with con:
        con.execute("DELETE FROM samples WHERE sample = 0")
    con.close()
    capsys.readouterr()
    err = _error(capsys, main(["report", str(old)]))
    assert "batch 0 holds 6 sample rows, expected 8 (4 images x 2 defense-attack pairs)" in err
