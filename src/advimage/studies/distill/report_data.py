"""The transfer report's inputs (Ojha et al., NeurIPS 2023): runs grouped, seeds summarized.

Reads every ``transfer.json`` (from ``advimage eval transfer``) under a folder and groups the runs
by (teacher group, student arch). The teacher group is the run's ``--tag`` if set, else ``main``
for an imported reference teacher, ``jitter-teacher`` for one trained with colour jitter, else the
teacher's arch and augmentation. The seed comes from the KD student's sidecar (falling back to
``s<N>``/``seed<N>`` in the folder name). Rates over seeds are summarized as mean ± sample std;
a single seed's rate carries its Wilson 95% interval over the images it was measured on
(:func:`bar_error`, :func:`n_cell`).
"""

from __future__ import annotations

import json
import re
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from advimage.formatting import rate_interval

__all__ = ["Key", "Run", "bar_error", "gap", "load_runs", "n_cell", "pct", "result_field",
           "row_at", "seed_stats"]

Key = tuple[str, str]  # (teacher group, student arch)
Run = tuple[str, Path, dict[str, Any]]  # (seed, folder, transfer.json)


def _group(doc: dict[str, Any]) -> str:
    """The teacher group of one run (see the module docstring)."""
    if doc.get("tag"):
        return str(doc["tag"])
    t = doc.get("models", {}).get("teacher", {})
    if t.get("imported"):
        return "main"
    if t.get("augment") == "jitter":
        return "jitter-teacher"
    return f"{t.get('arch', 'teacher')} ({t.get('augment') or 'unknown'} aug.)"


def _seed(doc: dict[str, Any], folder: Path) -> str:
    """The KD student's seed, else the ``s<N>``/``seed<N>`` of the folder name, else ``?``."""
    seed = doc.get("models", {}).get("kd", {}).get("seed")
    if seed is None:
        m = re.search(r"(?:^|[-_])(?:seed|s)(\d+)(?:$|[-_])", folder.name)
        seed = m.group(1) if m else "?"
    return str(seed)


def load_runs(root: Path) -> dict[Key, list[Run]]:
    """Every ``transfer.json`` under ``root`` (sorted by path), grouped by (teacher group, arch).

    Args:
        root: the folder searched recursively.
    """
    runs: dict[Key, list[Run]] = defaultdict(list)
    for path in sorted(root.rglob("transfer.json")):
        doc = json.loads(path.read_text())
        arch = doc.get("models", {}).get("kd", {}).get("arch", "?")
        runs[(_group(doc), arch)].append((_seed(doc, path.parent), path.parent, doc))
    return dict(runs)


def seed_stats(values: list[float | None]) -> tuple[float, float, int]:
    """Mean, sample std (0 for one value) and count of the values that are not None."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return float("nan"), float("nan"), 0
    spread = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return statistics.fmean(vals), spread, len(vals)


def pct(values: list[float | None]) -> str:
    """``mean ± std`` in percent over seeds (just the mean for one seed; ``n/a`` for none)."""
    mean, spread, n = seed_stats(values)
    if n == 0:
        return "n/a"
    return f"{100 * mean:.1f}" if n == 1 else f"{100 * mean:.1f} ± {100 * spread:.1f}"


def n_cell(ns: list[int | None]) -> str:
    """The ``n`` cell of a row: the images per seed (``2000``; ``1990/2000`` when seeds differ,
    ``n/a`` when no run recorded it)."""
    known = sorted({int(n) for n in ns if n is not None})
    return "/".join(str(n) for n in known) if known else "n/a"


def bar_error(values: list[float | None], ns: list[int | None]) -> tuple[float, float]:
    """Lower and upper error bar (fractions) at the mean of ``values``: the Wilson 95% interval
    over ``n`` images for a single seed with a known ``n``, else the sample std over seeds (as
    the tables: a single seed shows its interval, several seeds mean ± std)."""
    mean, spread, count = seed_stats(values)
    if count == 1:
        v, n = next((v, n) for v, n in zip(values, ns, strict=True) if v is not None)
        if n:
            lo, hi = rate_interval(v, int(n))
            return max(0.0, v - lo), max(0.0, hi - v)
    return spread, spread


def row_at(rows: list[dict[str, Any]] | None, eps: float) -> dict[str, Any] | None:
    """The row of ``rows`` crafted at ``eps`` (runs may use different eps lists)."""
    return next((r for r in rows or [] if abs(r["eps"] - eps) < 1e-9), None)


def gap(a: list[float | None], b: list[float | None]) -> list[float | None]:
    """Paired per-seed difference a - b."""
    return [None if x is None or y is None else x - y for x, y in zip(a, b, strict=True)]


def result_field(*keys: str) -> Callable[[dict[str, Any]], float | None]:
    """A getter of ``doc["results"][keys[0]][keys[1]]...``, None where a level is missing."""

    def get(doc: dict[str, Any]) -> float | None:
        cur: Any = doc["results"]
        for k in keys:
            if cur is None:
                return None
            cur = cur.get(k)
        return cur

    return get
