"""``--track none|tensorboard|mlflow``: the option and the ``with`` block that activates the
chosen :mod:`advimage.tracking` backend around a command."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from advimage.cli.cli_error import CliError

__all__ = ["add_track_arg", "tracking_for"]


def add_track_arg(p: argparse.ArgumentParser) -> None:
    """``--track none|tensorboard|mlflow`` (:mod:`advimage.tracking`; checked at parse time)."""
    from advimage.tracking import check_kind

    def kind(text: str) -> str:  # CliError, not ValueError: argparse would swallow that
        try:
            return check_kind(text)
        except ValueError as err:
            raise CliError(str(err)) from None

    p.add_argument("--track", default="none", type=kind, metavar="none|tensorboard|mlflow",
                   help="log per-epoch metrics to TensorBoard (OUT/tensorboard) or MLflow "
                        "(default: none)")


def tracking_for(
    a: argparse.Namespace, out_dir: Any, params: Mapping[str, Any] | None = None
) -> AbstractContextManager[Any]:
    """The ``--track`` tracker of ``out_dir``, active inside the ``with`` block (closed after);
    ``params`` (e.g. the training config) are recorded first. Under torchrun only rank 0
    tracks (one TensorBoard event file, one MLflow run); the other ranks get the no-op tracker."""
    from advimage.tracking import activate, make_tracker
    from advimage.train.distributed import is_rank_zero

    kind = getattr(a, "track", "none") if is_rank_zero() else "none"  # torchrun: rank 0 logs
    tracker = make_tracker(kind, out_dir)
    if params:
        tracker.log_params(params)
    return activate(tracker)
