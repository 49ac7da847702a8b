"""``--surrogate`` / ``--surrogate-weights``: transfer attacks from the command line.

A transfer attack is crafted on a surrogate model and evaluated on the target (``--model``);
several surrogates are combined as the logit ensemble of Dong et al. (CVPR 2018, Sec. 3.2;
:class:`advimage.attacks.transfer.SurrogateEnsemble`). The options become the ``surrogate`` and
``surrogate_weights`` keys of each attack of the run config, which checks them (a missing file,
one weight per model, weights >= 0 and not all 0) and names the models in the attack's label.
"""

from __future__ import annotations

import argparse
from typing import Any

from advimage.cli.cli_error import CliError

__all__ = ["add_surrogate_args", "surrogate_keys"]


def add_surrogate_args(p: argparse.ArgumentParser) -> None:
    """Add ``--surrogate`` and ``--surrogate-weights`` to ``p``."""
    p.add_argument("--surrogate", default=None, metavar="MODEL[,MODEL...]",
                   help="craft on this model instead (a transfer attack; several: on their "
                        "logit ensemble, Dong et al. 2018) and evaluate on --model")
    p.add_argument("--surrogate-weights", default=None, metavar="W1,W2,...",
                   help="one weight >= 0 per --surrogate model (default: equal)")


def surrogate_keys(a: argparse.Namespace) -> dict[str, Any]:
    """``surrogate`` (one path, or the list of a logit ensemble) and ``surrogate_weights`` for
    every attack of the run config; empty without ``--surrogate``.

    Raises:
        CliError: weights without surrogates, or weights that are not numbers.
    """
    paths = [p.strip() for p in (a.surrogate or "").split(",") if p.strip()]
    if not paths:
        if a.surrogate_weights:
            raise CliError("--surrogate-weights needs --surrogate with two or more models")
        return {}
    out: dict[str, Any] = {"surrogate": paths[0] if len(paths) == 1 else paths}
    if a.surrogate_weights:
        try:
            out["surrogate_weights"] = [float(w) for w in a.surrogate_weights.split(",")]
        except ValueError:
            raise CliError(f"--surrogate-weights must be comma-separated numbers, got "
                           f"{a.surrogate_weights!r}") from None
    return out
