"""Helpers of the study reports' interval tests (tests/reports/test_*_intervals.py): scipy's
Wilson 95% interval, the tables of a report page, a rate cell checked against a stored rate, the
figures a module saves and the error bars of a matplotlib container.

A page computes the interval of the rate it shows; where a table shows 1 decimal of a rate over
more than 1,000 images, that rate fixes the count only to +-1 image, so those intervals are
checked against the exact stored count to within the page's rounding plus what one image moves a
bound (about 100/n points): 0.11 points at n = 2,000.
"""

from __future__ import annotations

import html
import importlib
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import binomtest

ROOT = Path(__file__).resolve().parents[2]
_CELL = re.compile(r"^(?:test acc\. )?([\d.]+)% \[([\d.]+), ([\d.]+)\]")


def wilson(k: int, n: int) -> tuple[float, float]:
    """scipy's Wilson 95% interval of k of n, in percent."""
    ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
    return 100 * ci.low, 100 * ci.high


def tables(page: Path) -> dict[str, list[tuple[list[str], list[list[str]]]]]:
    """Section heading -> its tables as (header, rows of cell texts)."""
    out: dict[str, list[tuple[list[str], list[list[str]]]]] = {}
    section = ""

    def text(s: str) -> str:
        return html.unescape(re.sub(r"<[^>]+>", "", s)).strip()

    for m in re.finditer(r"<h\d>(.*?)</h\d>|<table.*?</table>", page.read_text(), re.S):
        if m.group(1) is not None:
            section = text(m.group(1))
            continue
        head = [text(h) for h in re.findall(r"<th>(.*?)</th>", m.group(0))]
        body = m.group(0).split("<tbody>")[1]
        rows = [[text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr)]
                for tr in re.findall(r"<tr>(.*?)</tr>", body)]
        out.setdefault(section, []).append((head, rows))
    return out


def check_cell(cell: str, rate: float, n: int, digits: int = 1, exact: bool = False) -> None:
    """``cell`` shows ``rate`` (a fraction over n images) and its Wilson interval."""
    m = _CELL.match(cell)
    assert m is not None, cell
    shown, lo, hi = (float(g) for g in m.groups())
    unit = 10.0 ** -digits
    assert abs(shown - 100 * rate) <= unit / 2 + 1e-9, (cell, rate)
    want = wilson(round(rate * n), n)
    if exact:
        assert (m.group(2), m.group(3)) == tuple(f"{w:.{digits}f}" for w in want), (cell, want)
    else:  # the shown rate fixes the count only to `off` images; each moves a bound by about
        # 100/n points (110/n: a 10% margin), and the page rounds to half a unit
        off = math.ceil(n * unit / 200)
        tol = unit / 2 + off * 110 / n
        assert abs(lo - want[0]) <= tol and abs(hi - want[1]) <= tol, (cell, want, tol)


def capture(monkeypatch: pytest.MonkeyPatch, module: str) -> dict[str, Any]:
    """The figures ``module`` saves, by file name (the PNGs are still written)."""
    mod = importlib.import_module(module)
    figs: dict[str, Any] = {}
    save = mod.save_png

    def keep(fig: Any, path: Path, **kw: Any) -> Any:
        figs[Path(path).name] = fig
        return save(fig, path, **kw)

    monkeypatch.setattr(mod, "save_png", keep)
    return figs


def bar_spans(container: Any) -> list[tuple[float, float]]:
    """(bottom, top) of each error bar of a bar or errorbar container."""
    bars = getattr(container, "errorbar", container)
    segs = bars.lines[2][0].get_segments()
    return [(float(s[0][1]), float(s[1][1])) for s in segs]


def assert_spans(got: list[tuple[float, float]], want: list[tuple[float, float]]) -> None:
    """Error bars (bottom, top) equal the expected intervals to 1e-9 points."""
    assert len(got) == len(want)
    np.testing.assert_allclose(np.asarray(got, dtype=float), np.asarray(want, dtype=float),
                               rtol=0, atol=1e-9)
