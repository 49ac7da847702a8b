"""Property: a damaged result store, resumed, is refused in one line or gives the
uninterrupted run's results, never short or altered ones.

Each case damages a finished or a killed (``kill -9`` after batch 1) three-batch run in one
random way of its kind, then runs ``advimage run --resume``: exit 2 with one
``advimage: error:`` line naming ``results.sqlite``, or exit 0 with every stored row and export
equal to the uninterrupted run's. Kinds whose outcome is known (rows deleted: refused; a lost
WAL after a checkpoint: the rows before it, so the run is completed) assert that outcome too.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from store_helpers import N_BATCHES, build_runs, cli, dump, rows


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    return build_runs(tmp_path_factory.mktemp("store-damage"))


def _sql(db: Path, *statements: tuple[str, tuple]) -> None:
    con = sqlite3.connect(str(db))
    try:
        with con:
            for sql, args in statements:
                con.execute(sql, args)
    finally:
        con.close()


def _delete_rows(db: Path, rng: random.Random) -> None:
    b = rng.randrange(2)  # a finished batch of either base
    ids = [r[0] for r in rows(db, f"SELECT rowid FROM samples WHERE batch = {b}")]
    for rid in rng.sample(ids, rng.randint(1, 3)):
        _sql(db, ("DELETE FROM samples WHERE rowid = ?", (rid,)))


_ALTERABLE = {"samples": ("pred_adv", "robust_correct", "distance", "label"),
              "timings": ("seconds",), "gradients": ("n_zero", "norm_sum"),
              "detector_scores": ("clean_score", "adv_score"), "attacks": ("eps", "steps"),
              "defenses": ("options",), "results": ("robust_accuracy", "n"),
              "batches": ("n",)}


def _alter(db: Path, rng: random.Random) -> None:
    table = rng.choice(sorted(_ALTERABLE))
    col = rng.choice(_ALTERABLE[table])
    rid = rng.choice([r[0] for r in rows(db, f"SELECT rowid FROM {table}")])
    (value,) = rows(db, f"SELECT {col} FROM {table} WHERE rowid = {rid}")[0]
    new = value + "x" if isinstance(value, str) else value * 1.5 + 1
    _sql(db, (f"UPDATE {table} SET {col} = ? WHERE rowid = ?", (new, rid)))


def _truncate(db: Path, rng: random.Random) -> None:
    os.truncate(db, rng.randrange(db.stat().st_size))


def _flip_bytes(db: Path, rng: random.Random) -> None:
    data = bytearray(db.read_bytes())
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    db.write_bytes(bytes(data))


def _drop_wal(db: Path, rng: random.Random) -> None:
    db.with_name(db.name + "-wal").unlink()
    if rng.random() < 0.5:
        db.with_name(db.name + "-shm").unlink()


def _garble_wal(db: Path, rng: random.Random) -> None:
    wal = db.with_name(db.name + "-wal")
    data = bytearray(wal.read_bytes())
    start = rng.randrange(32, len(data))
    data[start:] = rng.randbytes(len(data) - start)
    wal.write_bytes(bytes(data))


def _mark_unfinished_finished(db: Path, rng: random.Random) -> None:
    (n, count, digest) = rows(db, "SELECT n, rows, digest FROM batches WHERE batch = 1")[0]
    _sql(db, ("INSERT INTO batches VALUES (2, ?, 1, ?, ?)",
              (n, count, digest if rng.random() < 0.5 else None)))


def _unmark_batch(db: Path, rng: random.Random) -> None:
    _sql(db, ("DELETE FROM batches WHERE batch = ?", (rng.randrange(2),)))


def _drop_whole_batch(db: Path, rng: random.Random) -> None:
    """A finished batch removed cleanly, as if it had never been committed."""
    b = rng.randrange(2)
    _sql(db, ("DELETE FROM detector_scores WHERE sample IN "
              "(SELECT sample FROM samples WHERE batch = ?)", (b,)),
         *((f"DELETE FROM {t} WHERE batch = ?", (b,))
           for t in ("samples", "timings", "gradients", "batches")),
         ("DELETE FROM results", ()),
         ("INSERT INTO results SELECT s.defense, s.attack, COUNT(*), AVG(s.clean_correct), "
          "AVG(s.robust_correct), AVG(CASE WHEN s.clean_correct = 1 AND s.robust_correct = 0 "
          "THEN s.distance END), (SELECT SUM(t.seconds) FROM timings t WHERE t.defense = "
          "s.defense AND t.attack = s.attack) FROM samples s GROUP BY s.defense, s.attack", ()))


def _meta(db: Path, rng: random.Random) -> None:
    key = rng.choice(["finished", "sessions", "run"])
    _sql(db, ("DELETE FROM meta WHERE key = ?", (key,)))


def _garble_meta(db: Path, rng: random.Random) -> None:
    key = rng.choice(["finished", "sessions", "run", "store_version", "classes"])
    _sql(db, ("UPDATE meta SET value = ? WHERE key = ?", ("{not json", key)))


Damage = Callable[[Path, random.Random], None]
# (damage, base: finished or killed run, expected: refuse | same | either)
CASES: dict[str, tuple[Damage, str, str]] = {
    "delete-rows": (_delete_rows, "finished", "refuse"),
    "delete-rows-killed": (_delete_rows, "killed", "refuse"),
    "alter-value": (_alter, "finished", "refuse"),
    "truncate": (_truncate, "finished", "refuse"),
    "flip-bytes": (_flip_bytes, "finished", "either"),
    "lost-wal": (_drop_wal, "killed", "same"),
    "garbled-wal": (_garble_wal, "killed", "either"),
    "unfinished-marked-finished": (_mark_unfinished_finished, "killed", "refuse"),
    "finished-unmarked": (_unmark_batch, "finished", "refuse"),
    "batch-removed-cleanly": (_drop_whole_batch, "finished", "same"),
    "meta-entry-lost": (_meta, "killed", "same"),
    "meta-entry-garbled": (_garble_meta, "finished", "refuse"),
}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kind", sorted(CASES))
def test_damaged_store_is_refused_or_resumed_exactly(runs, tmp_path, capsys, kind,
                                                     seed) -> None:
    _, whole, killed = runs
    damage, base, expected = CASES[kind]
    run = tmp_path / "run"
    shutil.copytree(whole if base == "finished" else killed, run)
    rng = random.Random(f"{kind}-{seed}")
    damage(run / "results.sqlite", rng)
    capsys.readouterr()
    rc = cli("run", "--resume", str(run))
    err = capsys.readouterr().err.strip()
    if rc == 2:
        assert expected != "same", err
        assert err.startswith("advimage: error:") and "\n" not in err, err
        assert "results.sqlite" in err and "Traceback" not in err, err
        return
    assert rc == 0 and expected != "refuse", (rc, err)
    got, want = dump(run), dump(whole)
    assert got == want
    assert json.loads((run / "results.json").read_text())["batches_done"] == N_BATCHES
