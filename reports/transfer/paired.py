"""Transfer success and paired comparisons from the samples.csv files of the transfer runs.

    python reports/transfer/paired.py reports/transfer/data/samples-ti5.csv \
        reports/transfer/data/samples-ti3.csv

Transfer success = share of the images the target classifies correctly (clean) that the
transferred image makes it misclassify. Pairs: images fooled by one attack only, and the
two-sided exact sign test on those discordant images.
"""

from __future__ import annotations

import collections
import csv
import itertools
import math
import sys


def sign_test(a: int, b: int) -> float:
    """Two-sided exact binomial p-value of a vs b discordant pairs under p = 1/2."""
    n, k = a + b, min(a, b)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def main(paths: list[str]) -> None:
    rows: dict[str, dict[tuple[str, str], dict[str, str]]] = collections.defaultdict(dict)
    for path in paths:
        with open(path, newline="") as fh:
            for r in csv.DictReader(fh):
                rows[r["attack"].split("@")[0]][(r["batch"], r["sample"])] = r
    rows.pop("unbounded-pgd", None)
    first = next(iter(rows.values()))
    clean = [s for s, r in first.items() if r["clean_correct"] in ("1", "True")]
    fooled = {a: {s for s in clean if r[s]["robust_correct"] in ("0", "False")}
              for a, r in rows.items()}
    print(f"{len(first)} images, {len(clean)} classified correctly by the target\n")
    print("| attack | fooled | transfer success % |\n|---|---:|---:|")
    for a, f in fooled.items():
        print(f"| {a} | {len(f)} | {100 * len(f) / len(clean):.1f} |")
    print("\n| A | B | fooled by A only | by B only | sign-test p |\n|---|---|---:|---:|---:|")
    for a, b in itertools.combinations(fooled, 2):
        na, nb = len(fooled[a] - fooled[b]), len(fooled[b] - fooled[a])
        print(f"| {a} | {b} | {na} | {nb} | {sign_test(na, nb):.2g} |")


if __name__ == "__main__":
    main(sys.argv[1:])
