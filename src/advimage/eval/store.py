"""The SQLite results store of a run directory (``results.sqlite``), written batch by batch.

Every finished batch is one transaction holding its per-sample rows (one per sample x attack x
defense), its timings, gradient statistics and detector scores, the recomputed aggregate table
and finally the batch's row in ``batches``. The database runs in WAL mode, so a process killed
at any moment (even ``kill -9``) leaves either the whole batch or none of it, and a resumed run
skips exactly the batches listed in ``batches``.

Each batch's row in ``batches`` also holds its sample-row count and a digest of all its rows,
and opening an existing store verifies it (:func:`advimage.eval.store_check.verify_store`): a
truncated, damaged or edited store is refused with one line instead of resuming or reporting
short results. SQLite's own errors are left as they are, so a full disk during a batch rolls
that batch back and keeps every batch committed before it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from advimage.errors import CorruptFileError
from advimage.eval.store_check import (
    AGGREGATE,
    SCHEMA,
    STORE_VERSION,
    batch_digests,
    setup_digest,
    store_version,
    verify_store,
)

__all__ = ["DB_NAME", "ResultStore"]

log = logging.getLogger(__name__)

DB_NAME = "results.sqlite"


class ResultStore:
    """One run's results database (``run_dir/results.sqlite``)."""

    def __init__(self, path: str | Path, *, create: bool = False) -> None:
        """Open ``path``: verified when it exists, created empty when ``create``.

        Args:
            path: the ``results.sqlite`` file.
            create: create the store (a new run); without it the file must exist.

        Raises:
            CorruptFileError: an existing store that is empty, not a database or fails its
                integrity check.
            FileNotFoundError: ``path`` does not exist and ``create`` is False.
        """
        self.path = Path(path)
        exists = self.path.exists()
        if not exists and not create:
            raise FileNotFoundError(2, "no result store", str(self.path))
        if exists and self.path.stat().st_size == 0:
            raise CorruptFileError(f"{self.path}: empty file (0 bytes), not a result store; "
                                   "restore it from a copy or start a new run")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.path), timeout=30.0)
        self.conn.row_factory = sqlite3.Row
        try:
            self._open(exists)
        except BaseException:
            self.conn.close()
            raise

    def _open(self, exists: bool) -> None:
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: safe against kill -9
            if exists:
                self.version = verify_store(self.conn, self.path)
                return
            with self.conn:
                self.conn.executescript(f"BEGIN;{SCHEMA}INSERT OR IGNORE INTO meta VALUES "
                                        f"('store_version', '{STORE_VERSION}');COMMIT;")
            self.version = STORE_VERSION
        except sqlite3.DatabaseError as err:
            if type(err) is not sqlite3.DatabaseError:  # OperationalError: locked, full, I/O
                raise
            raise CorruptFileError(f"{self.path}: not a readable SQLite result store ({err}); "
                                   "restore it from a copy or start a new run") from err

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Commit everything inside at once, or nothing (rollback on error)."""
        with self.conn:
            yield self.conn

    # ------------------------------------------------------------------ metadata
    def set_meta(self, key: str, value: Any) -> None:
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                              (key, json.dumps(value, default=str)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def initialize(self, meta: Mapping[str, Any], attacks: Sequence[dict[str, Any]],
                   defenses: Sequence[dict[str, Any]]) -> None:
        """Write a new run's setup in one transaction and seal it (a digest of the attacks,
        defenses, classes and batch count that the integrity check compares).

        Args:
            meta: ``meta`` entries, e.g. ``run``, ``classes`` and ``n_batches``.
            attacks, defenses: rows of the ``attacks`` and ``defenses`` tables.
        """
        with self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                  [(k, json.dumps(v, default=str)) for k, v in meta.items()])
            self._put_attacks(attacks)
            self._put_defenses(defenses)
            self._seal()

    def _seal(self) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('setup_digest', ?)",
                          (json.dumps(setup_digest(self.conn)),))

    def upgrade(self, n_batches: int) -> None:
        """Give a version-1 store (verified on open) its batch count, per-batch digests and
        seal, so a resumed run continues it as a version-2 store."""
        if self.version >= STORE_VERSION:
            return
        log.warning("%s was written before per-batch digests; upgrading it", self.path)
        with self.conn:
            c = self.conn
            c.execute("ALTER TABLE batches ADD COLUMN rows INTEGER")
            c.execute("ALTER TABLE batches ADD COLUMN digest TEXT")
            c.execute("CREATE INDEX IF NOT EXISTS samples_batch ON samples(batch)")
            c.executemany("UPDATE batches SET rows = ?, digest = ? WHERE batch = ?",
                          [(r, d, b) for b, (r, d) in batch_digests(c).items()])
            c.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                          [("n_batches", json.dumps(n_batches)),
                           ("store_version", json.dumps(STORE_VERSION))])
            self._seal()
        self.version = store_version(self.conn)

    def progress(self) -> dict[str, Any]:
        """``partial``, ``batches_done``, ``batches_total`` and ``batches_missing`` of the run.

        A run is partial while batches are missing (shards not all done, or interrupted); a
        version-1 store, which did not record the batch count (total and missing None), is
        partial unless marked finished.
        """
        done = int(self.conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0])
        total = self.get_meta("n_batches")
        partial = not self.get_meta("finished", False) if total is None else done < total
        return {"partial": partial, "batches_done": done, "batches_total": total,
                "batches_missing": None if total is None else total - done}

    def new_session(self) -> int:
        """Count this process's run over the database (1 for a fresh run, 2 after a resume)."""
        with self.conn:  # one write transaction: concurrent shards get distinct numbers
            self.conn.execute(
                "INSERT INTO meta VALUES ('sessions', '1') ON CONFLICT(key) DO UPDATE "
                "SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)")
            return int(self.get_meta("sessions"))

    def mark_finished(self, n_batches: int) -> bool:
        """Set meta ``finished``: all ``n_batches`` are stored. Counted and written in one
        statement, so a shard that ends first cannot overwrite the last one's verdict."""
        with self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO meta SELECT 'finished', CASE WHEN COUNT(*) = ? "
                "THEN 'true' ELSE 'false' END FROM batches", (n_batches,))
        return bool(self.get_meta("finished"))

    def _put_attacks(self, rows: Sequence[dict[str, Any]]) -> None:
        self.conn.executemany(
            "INSERT OR REPLACE INTO attacks VALUES (:attack, :name, :label, :kind, :norm, "
            ":eps, :options, :steps, :restarts, :eot, :position)", rows)

    def _put_defenses(self, rows: Sequence[dict[str, Any]]) -> None:
        self.conn.executemany(
            "INSERT OR REPLACE INTO defenses VALUES (:defense, :name, :options, "
            ":is_randomized, :is_differentiable, :uses_bpda, :position)", rows)

    # ------------------------------------------------------------------ batches
    def done_batches(self) -> set[int]:
        return {int(r[0]) for r in self.conn.execute("SELECT batch FROM batches")}

    def write_batch(
        self,
        batch: int,
        n: int,
        session: int,
        samples: Iterable[tuple],
        timings: Iterable[tuple],
        gradients: Iterable[tuple],
        scores: Iterable[tuple],
    ) -> bool:
        """Store one finished batch in a single transaction (all of it or nothing).

        Rows are tuples in table column order (see :data:`advimage.eval.store_check.SCHEMA`);
        the batch's row count and digest are computed from the rows as stored.
        Returns False, storing nothing, when the batch is already stored: another process
        (e.g. the same ``--shard`` started twice) committed it first; batches are seeded, so
        its rows are the ones this copy holds.
        """
        try:
            with self.conn:
                c = self.conn
                c.execute("INSERT INTO batches VALUES (?, ?, ?, NULL, NULL)", (batch, n, session))
                c.executemany("INSERT OR REPLACE INTO samples VALUES (?,?,?,?,?,?,?,?,?,?)",
                              samples)
                c.executemany("INSERT OR REPLACE INTO timings VALUES (?,?,?,?)", timings)
                c.executemany("INSERT OR REPLACE INTO gradients VALUES (?,?,?,?,?)", gradients)
                c.executemany("INSERT OR REPLACE INTO detector_scores VALUES (?,?,?,?,?,?)",
                              scores)
                rows, digest = batch_digests(c, batch)[batch]
                c.execute("UPDATE batches SET rows = ?, digest = ? WHERE batch = ?",
                          (rows, digest, batch))
                c.execute(AGGREGATE)
        except sqlite3.IntegrityError:
            if batch not in self.done_batches():
                raise
            log.warning("batch %d was already stored by another process; this copy is dropped",
                        batch)
            return False
        return True

    # ------------------------------------------------------------------ reading
    def _dicts(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute(sql, args)]

    def results(self) -> list[dict[str, Any]]:
        """Aggregate rows joined with their attack and defense descriptions, in config order."""
        return self._dicts(
            "SELECT r.defense, a.label, a.name, a.kind, r.attack, a.norm, a.eps, a.steps, "
            "a.restarts, a.eot, r.n, r.clean_accuracy, r.robust_accuracy, r.mean_distance, "
            "r.seconds FROM results r JOIN attacks a ON a.attack = r.attack "
            "JOIN defenses d ON d.defense = r.defense ORDER BY d.position, a.position")

    def defenses(self) -> list[dict[str, Any]]:
        return self._dicts("SELECT * FROM defenses ORDER BY position")

    def gradients(self) -> list[dict[str, Any]]:
        """Per defense: samples measured, samples with an all-zero input gradient, mean norm."""
        return self._dicts(
            "SELECT defense, SUM(n) AS n, SUM(n_zero) AS n_zero, SUM(norm_sum) / SUM(n) "
            "AS mean_norm FROM gradients GROUP BY defense ORDER BY defense")

    def samples(self) -> list[dict[str, Any]]:
        return self._dicts("SELECT * FROM samples ORDER BY defense, attack, sample")

    def iter_samples(self) -> Iterator[sqlite3.Row]:
        """Stream the per-sample rows (CSV export without loading them all)."""
        yield from self.conn.execute("SELECT * FROM samples ORDER BY defense, attack, sample")

    def detector_scores(self) -> list[dict[str, Any]]:
        return self._dicts("SELECT * FROM detector_scores ORDER BY defense, attack, detector, "
                           "sample")

    def timings(self) -> list[dict[str, Any]]:
        """Per (defense, attack): batches, total and mean seconds per batch."""
        return self._dicts(
            "SELECT defense, attack, COUNT(*) AS batches, SUM(seconds) AS seconds, "
            "AVG(seconds) AS seconds_per_batch FROM timings GROUP BY defense, attack "
            "ORDER BY defense, attack")
