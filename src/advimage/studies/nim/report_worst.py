"""Per-image worst case of the De^3 robustness report (You et al., NeurIPS 2023, "Beyond
Pretrained Features: Noisy Image Modeling Provides Adversarial Defense").

A randomized defense can resist one attack on some images and another attack on others, so the
best single attack overstates its robustness. The worst case at a budget counts an image as
robust only if it is robust (clean-correct and adversarially correct) under every attack of the
run at that budget and norm; the harness's unbounded sanity check is left out. It is computed
from the run's per-sample rows (``samples.csv``) and added to the :class:`Run` as result rows
of an attack of kind ``WORST``, so every table reads it like an attack column.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
from collections.abc import Sequence
from pathlib import Path

from advimage.studies.nim.report_run import EPS_TOL, WORST, Attack, Run

__all__ = ["read_samples", "with_worst", "worst_columns", "worst_for"]

SAMPLE_FIELDS = ("sample", "defense", "attack", "robust_correct")  # samples.csv columns used
ACC_TOL = 1e-9  # a robust fraction recomputed from samples.csv must match results.json


def read_samples(run_dir: Path) -> dict[tuple[str, str], dict[int, bool]]:
    """``{(defense, attack key): {sample: robust}}`` from ``run_dir``/samples.csv (or its
    gzipped copy ``samples.csv.gz``, the form a report's committed data takes).

    Raises:
        ValueError: the file is missing or lacks a column of SAMPLE_FIELDS.
    """
    path = run_dir / "samples.csv"
    if not path.exists() and path.with_name("samples.csv.gz").exists():
        path = path.with_name("samples.csv.gz")
    if not path.exists():
        raise ValueError(f"missing {path} (the per-sample rows of the worst case)")
    out: dict[tuple[str, str], dict[int, bool]] = {}
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [f for f in SAMPLE_FIELDS if f not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} has no {missing[0]!r} column")
        for r in reader:
            out.setdefault((r["defense"], r["attack"]), {})[int(r["sample"])] = \
                int(r["robust_correct"]) != 0
    return out


def worst_columns(run: Run) -> list[Attack]:
    """One worst-case column per (norm, eps) of the run's bounded attacks, in the run's order."""
    groups: dict[tuple[str, float], list[Attack]] = {}
    for a in run.attacks:
        if a.kind in ("unbounded", WORST):
            continue
        k = next((g for g in groups if g[0] == a.norm and abs(g[1] - a.eps) < EPS_TOL),
                 (a.norm, a.eps))
        groups.setdefault(k, []).append(a)
    return [Attack(f"worst case {norm}@{eps:.6g}", "worst case", "worst case", eps,
                   max(a.steps for a in g), max(a.eot for a in g), max(a.restarts for a in g),
                   WORST, norm, tuple(a.key for a in g)) for (norm, eps), g in groups.items()]


def worst_for(run: Run, att: Attack) -> Attack | None:
    """The run's worst-case column at ``att``'s norm and budget (None: no such column)."""
    return next((w for w in run.worst if w.norm == att.norm and abs(w.eps - att.eps) < EPS_TOL),
                None)


def with_worst(run: Run, cols: Sequence[Attack] | None = None) -> Run:
    """``run`` with worst-case rows: per defense and column, the fraction of images robust
    under every attack of the column.

    Args:
        run: a harness run whose folder holds samples.csv.
        cols: worst-case columns (None: :func:`worst_columns` of ``run``). A baseline gets the
            report's run's columns, so both take the worst over the same attacks.

    Returns:
        A copy of ``run`` with the rows added and ``worst`` set; a defense that lacks one of a
        column's attacks gets no row there (a dash in the tables, never a partial worst case).

    Raises:
        ValueError: samples.csv is missing, disagrees with results.json (image count, robust
            accuracy), or covers different images under two attacks of one defense.
    """
    cols = list(worst_columns(run) if cols is None else cols)
    samples = read_samples(run.path)
    where = run.path / "samples.csv"
    for (label, key), per in samples.items():
        r = run.row(label, key)
        if r is not None and len(per) != r["n"]:
            raise ValueError(f"{where}: {label} under {key} has {len(per)} images, results.json "
                             f"{r['n']} (an incomplete run, or files of different runs?)")
        if r is not None and abs(sum(per.values()) / len(per) - r["robust_accuracy"]) > ACC_TOL:
            raise ValueError(f"{where}: {label} under {key} gives robust accuracy "
                             f"{sum(per.values()) / len(per):.4f}, results.json "
                             f"{r['robust_accuracy']:.4f} (files of different runs?)")
    rows = []
    for label in dict.fromkeys(r["defense"] for r in run.rows):
        for w in cols:
            if any((label, k) not in samples or run.row(label, k) is None for k in w.parts):
                continue
            per = [samples[(label, k)] for k in w.parts]  # {sample: robust} per attack
            ids = per[0].keys()
            for p, k in zip(per, w.parts, strict=True):
                if p.keys() != ids:
                    raise ValueError(f"{where}: {label} has rows for other images under {k} "
                                     f"than under {w.parts[0]} (an incomplete run?)")
            robust = sum(all(p[i] for p in per) for i in ids)  # images robust under every one
            rows.append({"defense": label, "attack": w.key, "n": len(ids),
                         "clean_accuracy": run.clean(label),
                         "robust_accuracy": robust / len(ids)})
    return dataclasses.replace(run, rows=[*run.rows, *rows], worst=cols)
