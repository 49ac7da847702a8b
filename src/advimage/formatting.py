"""How reports print numbers and paths: budgets as ``k/255``, rates with Wilson 95% intervals,
paths relative to the report.

A bottom-layer module (standard library only), so every report and table prints budgets,
uncertainties and paths the same way.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["WILSON_Z", "attack_label", "budget_label", "display_model", "display_path",
           "display_value", "format_eps", "format_rate", "rate_interval", "wilson_interval"]

WILSON_Z = 1.959963984540054  # two-sided 95% normal quantile
_K255_TOLERANCE = 1e-6


def format_eps(eps: float, norm: str = "linf") -> str:
    """A budget as people write it: ``8/255`` for an L-inf eps within 1e-6 of ``k/255`` (integer
    k >= 1), else a short decimal (``0.5``, ``0.0314``); L2/L1 budgets always as decimals."""
    eps = float(eps)
    k = round(eps * 255)
    if norm == "linf" and k >= 1 and abs(eps - k / 255) <= _K255_TOLERANCE:
        return f"{k}/255"
    return f"{eps:.4g}"


def budget_label(eps: float, norm: str = "linf") -> str:
    """``8/255`` for L-inf (the default norm), ``L2 0.5`` / ``L1 10`` for the others."""
    text = format_eps(eps, norm)
    return text if norm == "linf" else f"{norm.upper()} {text}"


def attack_label(row: Mapping[str, Any]) -> str:
    """A result row's attack as people read it: ``pgd@8/255``, ``pgd@L2 0.5`` (``label@budget``);
    the unbounded sanity check by its label alone (its budget is the whole box)."""
    if row["kind"] == "unbounded":
        return str(row["label"])
    return f"{row['label']}@{budget_label(row['eps'], row['norm'])}"


def wilson_interval(successes: int, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """Wilson score interval of a binomial rate ``successes / n`` (95% for the default ``z``).

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0% or 100%.
    ``n == 0`` gives the uninformative ``(0.0, 1.0)``.

    Raises:
        ValueError: ``n`` negative or ``successes`` outside ``[0, n]``.
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends, no 1e-17 residue
    return lo, 1.0 if successes == n else min(1.0, centre + half)


def rate_interval(rate: float, n: int) -> tuple[float, float]:
    """:func:`wilson_interval` of a rate measured on ``n`` items (successes = round(rate * n))."""
    return wilson_interval(round(float(rate) * n), n)


def format_rate(rate: float | None, n: int) -> str:
    """``35.0% [18.1, 56.7]``: a rate in percent with its Wilson 95% interval (n items)."""
    if rate is None:
        return ""
    lo, hi = rate_interval(rate, n)
    return f"{100 * rate:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def display_path(path: str | os.PathLike[str], base: str | os.PathLike[str]) -> str:
    """``path`` as a report in folder ``base`` should name it: a relative path stays as given;
    an absolute one becomes relative to ``base`` (``../runs/a``), never this machine's absolute
    path (the bare name when no relative path exists, e.g. another drive)."""
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return Path(os.path.relpath(p, Path(base).resolve())).as_posix()
    except ValueError:  # no relative path between them (Windows drives)
        return p.name


def display_model(spec: str, base: str | os.PathLike[str]) -> str:
    """A model as a report in ``base`` should name it: ``bundled``/``bundled:X``/``hf:X`` as
    given, a file (also behind ``torchscript:``) through :func:`display_path`."""
    prefix = "torchscript:" if spec.startswith("torchscript:") else ""
    bare = spec.removeprefix(prefix)
    if bare == "bundled" or bare.startswith(("bundled:", "hf:")):
        return spec
    return prefix + display_path(bare, base)


def display_value(value: object, base: str | os.PathLike[str]) -> object:
    """``value`` with every absolute path string inside it (also in nested dicts and lists)
    made relative to ``base`` by :func:`display_path`; other values unchanged."""
    if isinstance(value, str):
        return display_path(value, base) if Path(value).is_absolute() else value
    if isinstance(value, dict):
        return {k: display_value(v, base) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [display_value(v, base) for v in value]
    return value
