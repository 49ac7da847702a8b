"""Schema, per-batch digests and the integrity check of the result store (``results.sqlite``).

Every finished batch's row in ``batches`` carries the number of its sample rows and a SHA-256
digest over all its rows (samples, timings, gradient statistics, detector scores, and the
per-image predictions and criterion scores of a detection run) in a canonical order; the attack
and defense tables, the class names, the batch count and a detection run's setup are sealed by
one more digest in ``meta``. :func:`verify_store` checks a store before it is resumed or reported:
SQLite's own ``PRAGMA integrity_check``, the schema, the seal, every finished batch's count and
digest, rows of batches not marked finished, and the aggregate table against the sample rows.
Any failure is a one-line :class:`~advimage.errors.CorruptFileError` naming the file and what
failed, so a damaged store is refused instead of giving short or altered results.

Stores written before the digests existed (``batches`` without ``rows``/``digest``: version 1)
are still read: they are checked by everything but the digests (the sample count of every
batch must still be its size times the defenses times the attacks).
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from advimage.errors import CorruptFileError

__all__ = [
    "AGGREGATE",
    "SCHEMA",
    "STORE_VERSION",
    "batch_digests",
    "setup_digest",
    "store_version",
    "verify_store",
]

STORE_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attacks(
  attack TEXT PRIMARY KEY, name TEXT, label TEXT, kind TEXT, norm TEXT, eps REAL,
  options TEXT, steps INTEGER, restarts INTEGER, eot INTEGER, position INTEGER);
CREATE TABLE IF NOT EXISTS defenses(
  defense TEXT PRIMARY KEY, name TEXT, options TEXT, is_randomized INTEGER,
  is_differentiable INTEGER, uses_bpda INTEGER, position INTEGER);
CREATE TABLE IF NOT EXISTS batches(
  batch INTEGER PRIMARY KEY, n INTEGER NOT NULL, session INTEGER NOT NULL,
  rows INTEGER, digest TEXT);
CREATE TABLE IF NOT EXISTS samples(
  sample INTEGER, batch INTEGER, defense TEXT, attack TEXT, label INTEGER,
  pred_clean INTEGER, pred_adv INTEGER, clean_correct INTEGER, robust_correct INTEGER,
  distance REAL, PRIMARY KEY(sample, defense, attack));
CREATE INDEX IF NOT EXISTS samples_batch ON samples(batch);
CREATE TABLE IF NOT EXISTS timings(
  batch INTEGER, defense TEXT, attack TEXT, seconds REAL, PRIMARY KEY(batch, defense, attack));
CREATE TABLE IF NOT EXISTS gradients(
  batch INTEGER, defense TEXT, n INTEGER, n_zero INTEGER, norm_sum REAL,
  PRIMARY KEY(batch, defense));
CREATE TABLE IF NOT EXISTS detector_scores(
  sample INTEGER, defense TEXT, attack TEXT, detector TEXT, clean_score REAL, adv_score REAL,
  PRIMARY KEY(sample, defense, attack, detector));
CREATE TABLE IF NOT EXISTS detection_units(
  batch INTEGER PRIMARY KEY, split TEXT, attack TEXT, seconds_attack REAL, seconds_score REAL);
CREATE TABLE IF NOT EXISTS detection_samples(
  batch INTEGER, sample INTEGER, label INTEGER, pred INTEGER, PRIMARY KEY(batch, sample))
  WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS detection_scores(
  batch INTEGER, criterion TEXT, sample INTEGER, score REAL,
  PRIMARY KEY(batch, criterion, sample)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS results(
  defense TEXT, attack TEXT, n INTEGER, clean_accuracy REAL, robust_accuracy REAL,
  mean_distance REAL, seconds REAL, PRIMARY KEY(defense, attack));
"""

_AGGREGATE_SELECT = """
SELECT s.defense, s.attack, COUNT(*), AVG(s.clean_correct), AVG(s.robust_correct),
  AVG(CASE WHEN s.clean_correct = 1 AND s.robust_correct = 0 THEN s.distance END),
  (SELECT SUM(t.seconds) FROM timings t WHERE t.defense = s.defense AND t.attack = s.attack)
FROM samples s GROUP BY s.defense, s.attack
"""
# The aggregate table, recomputed inside every batch transaction (cheap: GROUP BY on an index).
AGGREGATE = "INSERT OR REPLACE INTO results" + _AGGREGATE_SELECT

_LEGACY_BATCH_COLUMNS = ("batch", "n", "session")

# (table, query): every row of a batch, in a canonical order. ``{where}`` selects one batch.
_BATCH_ROWS = (
    ("samples", "SELECT batch, sample, defense, attack, label, pred_clean, pred_adv, "
                "clean_correct, robust_correct, distance FROM samples {where} "
                "ORDER BY batch, defense, attack, sample"),
    ("timings", "SELECT batch, defense, attack, seconds FROM timings {where} "
                "ORDER BY batch, defense, attack"),
    ("gradients", "SELECT batch, defense, n, n_zero, norm_sum FROM gradients {where} "
                  "ORDER BY batch, defense"),
    ("detection_units", "SELECT batch, split, attack, seconds_attack, seconds_score "
                        "FROM detection_units {where} ORDER BY batch"),
    ("detection_samples", "SELECT batch, sample, label, pred FROM detection_samples {where} "
                          "ORDER BY batch, sample"),
    ("detection_scores", "SELECT batch, criterion, sample, score FROM detection_scores "
                         "{where} ORDER BY batch, criterion, sample"),
)
# Tables a store written before the detection run kind lacks (read as empty).
_OPTIONAL_TABLES = ("detection_units", "detection_samples", "detection_scores")
_SCORES_ALL = ("SELECT s.batch, d.sample, d.defense, d.attack, d.detector, d.clean_score, "
               "d.adv_score FROM detector_scores d LEFT JOIN samples s ON s.sample = d.sample "
               "AND s.defense = d.defense AND s.attack = d.attack "
               "ORDER BY s.batch, d.defense, d.attack, d.detector, d.sample")
_SCORES_ONE = ("SELECT s.batch, d.sample, d.defense, d.attack, d.detector, d.clean_score, "
               "d.adv_score FROM samples s JOIN detector_scores d ON s.sample = d.sample "
               "AND s.defense = d.defense AND s.attack = d.attack WHERE s.batch = ? "
               "ORDER BY s.batch, d.defense, d.attack, d.detector, d.sample")


def _line(table: str, row: Any) -> bytes:
    # json writes floats with repr (exact round trip); SQLite has already turned NaN into NULL
    return (json.dumps([table, *row[1:]], separators=(",", ":")) + "\n").encode()


def batch_digests(conn: sqlite3.Connection,
                  batch: int | None = None) -> dict[int | None, tuple[int, str]]:
    """``{batch: (sample rows, sha256 hex)}`` over the rows in the store (one batch, or all).

    A detector score without its sample row is counted under batch ``None``.
    """
    hashes: dict[int | None, Any] = defaultdict(hashlib.sha256)
    counts: dict[int | None, int] = defaultdict(int)
    one = batch is not None
    args = (batch,) if one else ()
    queries = [(t, q.format(where="WHERE batch = ?" if one else "")) for t, q in _BATCH_ROWS
               if t not in _OPTIONAL_TABLES or _columns(conn, t)]
    for table, sql in [*queries, ("scores", _SCORES_ONE if one else _SCORES_ALL)]:
        for row in conn.execute(sql, args):
            b = row[0]
            hashes[b].update(_line(table, row))
            if table == "samples":
                counts[b] += 1
    if one and batch not in hashes:
        hashes[batch].update(b"")
    return {b: (counts[b], h.hexdigest()) for b, h in hashes.items()}


def setup_digest(conn: sqlite3.Connection) -> str:
    """SHA-256 over the attack and defense tables and the ``classes`` and ``n_batches`` meta."""
    h = hashlib.sha256()
    for sql in ("SELECT * FROM attacks ORDER BY attack", "SELECT * FROM defenses ORDER BY defense",
                "SELECT key, value FROM meta WHERE key IN "
                "('classes', 'detection', 'kind', 'n_batches') ORDER BY key"):
        for row in conn.execute(sql):
            h.update((json.dumps(list(row), separators=(",", ":")) + "\n").encode())
    return h.hexdigest()


def _columns(conn: sqlite3.Connection, table: str) -> tuple[str, ...]:
    return tuple(r[1] for r in conn.execute(f"PRAGMA table_info({table})"))


def _expected_columns() -> dict[str, tuple[str, ...]]:
    mem = sqlite3.connect(":memory:")
    try:
        mem.executescript(SCHEMA)
        names = [r[0] for r in mem.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: _columns(mem, t) for t in names}
    finally:
        mem.close()


def store_version(conn: sqlite3.Connection) -> int:
    """2 for a store with per-batch digests, 1 for an older one."""
    return 1 if _columns(conn, "batches") == _LEGACY_BATCH_COLUMNS else STORE_VERSION


def _meta(conn: sqlite3.Connection, key: str) -> Any:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else json.loads(row[0])


def _check_schema(conn: sqlite3.Connection, fail: Callable[[str], NoReturn]) -> int:
    for table, cols in _expected_columns().items():
        have = _columns(conn, table)
        if not have and table in _OPTIONAL_TABLES:
            continue
        if not have:
            fail(f"table {table} is missing")
        if have != cols and not (table == "batches" and have == _LEGACY_BATCH_COLUMNS):
            fail(f"table {table} has columns {', '.join(have)}, expected {', '.join(cols)}")
    for key, value in conn.execute("SELECT key, value FROM meta"):
        try:
            json.loads(value)
        except (TypeError, ValueError):
            fail(f"meta entry {key!r} is not JSON")
    version = store_version(conn)
    stored = _meta(conn, "store_version")
    if stored is not None and stored != version:
        fail(f"store version {stored} does not match its tables (version {version})")
    if version >= 2:
        if stored is None:
            fail("the store_version entry of meta is missing")
        seal = _meta(conn, "setup_digest")
        if seal is None:
            fail("the setup digest (attacks, defenses, classes, batch count) is missing")
        if seal != setup_digest(conn):
            fail("the attacks, defenses, classes or batch count were altered (setup digest "
                 "mismatch)")
    return version


def _check_batches(conn: sqlite3.Connection, fail: Callable[[str], NoReturn], version: int) -> None:
    per_batch = (conn.execute("SELECT COUNT(*) FROM attacks").fetchone()[0]
                 * conn.execute("SELECT COUNT(*) FROM defenses").fetchone()[0])
    if _meta(conn, "kind") == "detection":  # one batch = one scored set of images
        per_batch = 0
        _check_detection_counts(conn, fail)
    found = batch_digests(conn)
    cols = "batch, n, rows, digest" if version >= 2 else "batch, n, NULL, NULL"
    marked = conn.execute(f"SELECT {cols} FROM batches ORDER BY batch").fetchall()
    for b, n, rows, digest in marked:
        have, got = found.pop(b, (0, None))
        if version >= 2 and (rows is None or digest is None):
            fail(f"batch {b} is marked finished without its row count and digest")
        if version >= 2 and have != rows:
            fail(f"batch {b} holds {have} sample rows, {rows} were stored when it finished")
        if have != n * per_batch:
            fail(f"batch {b} holds {have} sample rows, expected {n * per_batch} "
                 f"({n} images x {per_batch} defense-attack pairs)")
        if version >= 2 and got != digest:
            fail(f"the rows of batch {b} were altered (digest mismatch)")
    for b in found:
        what = "detector scores without a sample row" if b is None else \
            f"rows of batch {b}, which is not marked finished"
        fail(f"the store holds {what}")


def _check_detection_counts(conn: sqlite3.Connection,
                            fail: Callable[[str], NoReturn]) -> None:
    """Every finished batch of a detection run holds one sample row per image."""
    have = dict(conn.execute("SELECT batch, COUNT(*) FROM detection_samples GROUP BY batch"))
    for b, n in conn.execute("SELECT batch, n FROM batches ORDER BY batch"):
        if have.get(b, 0) != n:
            fail(f"detection batch {b} holds {have.get(b, 0)} image rows, expected {n}")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9,
                                                                abs_tol=1e-12)
    return a == b


def _check_aggregate(conn: sqlite3.Connection, fail: Callable[[str], NoReturn]) -> None:
    want = {r[:2]: r[2:] for r in conn.execute(_AGGREGATE_SELECT)}
    have = {r[:2]: r[2:] for r in conn.execute("SELECT * FROM results")}
    if want.keys() != have.keys() or not all(
            all(_same(x, y) for x, y in zip(want[k], have[k], strict=True)) for k in want):
        fail("the aggregate table (results) does not match the sample rows")


def verify_store(conn: sqlite3.Connection, path: Path) -> int:
    """Check the store behind ``conn``; returns its version (1 or 2).

    Raises:
        CorruptFileError: one line naming ``path`` and the first check that failed.
    """
    def fail(what: str) -> NoReturn:
        raise CorruptFileError(f"{path}: {what}; the result store is damaged (restore it from a "
                               "copy or start a new run)")

    conn.execute("BEGIN")  # one read snapshot: shards may commit batches meanwhile
    try:
        problems = [r[0] for r in conn.execute("PRAGMA integrity_check(5)")]
        if problems != ["ok"]:
            fail(f"SQLite integrity check failed ({problems[0]})")
        version = _check_schema(conn, fail)
        _check_batches(conn, fail, version)
        _check_aggregate(conn, fail)
    finally:
        conn.rollback()
    return version
