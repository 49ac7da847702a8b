"""The SQLite results store of a run directory (``results.sqlite``), written batch by batch.

Every finished batch is one transaction holding its per-sample rows (one per sample x attack x
defense), its timings, gradient statistics and detector scores, the recomputed aggregate table
and finally the batch's row in ``batches``. The database runs in WAL mode, so a process killed
at any moment (even ``kill -9``) leaves either the whole batch or none of it, and a resumed run
skips exactly the batches listed in ``batches``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["DB_NAME", "ResultStore"]

log = logging.getLogger(__name__)

DB_NAME = "results.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attacks(
  attack TEXT PRIMARY KEY, name TEXT, label TEXT, kind TEXT, norm TEXT, eps REAL,
  options TEXT, steps INTEGER, restarts INTEGER, eot INTEGER, position INTEGER);
CREATE TABLE IF NOT EXISTS defenses(
  defense TEXT PRIMARY KEY, name TEXT, options TEXT, is_randomized INTEGER,
  is_differentiable INTEGER, uses_bpda INTEGER, position INTEGER);
CREATE TABLE IF NOT EXISTS batches(
  batch INTEGER PRIMARY KEY, n INTEGER NOT NULL, session INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS samples(
  sample INTEGER, batch INTEGER, defense TEXT, attack TEXT, label INTEGER,
  pred_clean INTEGER, pred_adv INTEGER, clean_correct INTEGER, robust_correct INTEGER,
  distance REAL, PRIMARY KEY(sample, defense, attack));
CREATE TABLE IF NOT EXISTS timings(
  batch INTEGER, defense TEXT, attack TEXT, seconds REAL, PRIMARY KEY(batch, defense, attack));
CREATE TABLE IF NOT EXISTS gradients(
  batch INTEGER, defense TEXT, n INTEGER, n_zero INTEGER, norm_sum REAL,
  PRIMARY KEY(batch, defense));
CREATE TABLE IF NOT EXISTS detector_scores(
  sample INTEGER, defense TEXT, attack TEXT, detector TEXT, clean_score REAL, adv_score REAL,
  PRIMARY KEY(sample, defense, attack, detector));
CREATE TABLE IF NOT EXISTS results(
  defense TEXT, attack TEXT, n INTEGER, clean_accuracy REAL, robust_accuracy REAL,
  mean_distance REAL, seconds REAL, PRIMARY KEY(defense, attack));
"""

# The aggregate table, recomputed inside every batch transaction (cheap: GROUP BY on an index).
_AGGREGATE = """
INSERT OR REPLACE INTO results
SELECT s.defense, s.attack, COUNT(*), AVG(s.clean_correct), AVG(s.robust_correct),
  AVG(CASE WHEN s.clean_correct = 1 AND s.robust_correct = 0 THEN s.distance END),
  (SELECT SUM(t.seconds) FROM timings t WHERE t.defense = s.defense AND t.attack = s.attack)
FROM samples s GROUP BY s.defense, s.attack
"""


class ResultStore:
    """One run's results database (``run_dir/results.sqlite``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.path), timeout=30.0)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: safe against kill -9
        self.conn.executescript(_SCHEMA)

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

    def put_attacks(self, rows: Sequence[dict[str, Any]]) -> None:
        with self.conn:
            self.conn.executemany(
                "INSERT OR REPLACE INTO attacks VALUES (:attack, :name, :label, :kind, :norm, "
                ":eps, :options, :steps, :restarts, :eot, :position)", rows)

    def put_defenses(self, rows: Sequence[dict[str, Any]]) -> None:
        with self.conn:
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

        Rows are tuples in table column order (see the schema at the top of this module).
        Returns False, storing nothing, when the batch is already stored: another process
        (e.g. the same ``--shard`` started twice) committed it first; batches are seeded, so
        its rows are the ones this copy holds.
        """
        try:
            with self.conn:
                c = self.conn
                c.execute("INSERT INTO batches VALUES (?, ?, ?)", (batch, n, session))
                c.executemany("INSERT OR REPLACE INTO samples VALUES (?,?,?,?,?,?,?,?,?,?)",
                              samples)
                c.executemany("INSERT OR REPLACE INTO timings VALUES (?,?,?,?)", timings)
                c.executemany("INSERT OR REPLACE INTO gradients VALUES (?,?,?,?,?)", gradients)
                c.executemany("INSERT OR REPLACE INTO detector_scores VALUES (?,?,?,?,?,?)",
                              scores)
                c.execute(_AGGREGATE)
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
