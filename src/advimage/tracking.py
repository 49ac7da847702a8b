"""Optional experiment tracking: scalars per epoch (or per budget) to TensorBoard or MLflow.

One small logger for every long-running command: ``make_tracker(kind, out_dir)`` returns a
:class:`Tracker` (``none``: does nothing, the default; ``tensorboard``: event files in
``OUT/tensorboard/``, needs the ``tensorboard`` package; ``mlflow``: one MLflow run, in
``$MLFLOW_TRACKING_URI`` or else ``OUT/mlruns``, needs ``mlflow``). The CLI activates it around
a command (:func:`activate`), and library loops report through :func:`log_scalars`, which is a
no-op when nothing is active, so tracking never changes what a run computes.

Bottom layer: the standard library and lazy imports only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from advimage.errors import UserInputError

__all__ = ["KINDS", "Tracker", "activate", "check_kind", "log_scalars", "make_tracker"]

KINDS = ("none", "tensorboard", "mlflow")


def _scalars(values: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """Numeric entries of ``values`` (not bools, not ``epoch``: that is the step) as
    ``prefix/name`` -> float."""
    head = f"{prefix}/" if prefix else ""
    return {f"{head}{k}": float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"}


class Tracker:
    """The no-op tracker (``--track none``); the backends override its three methods."""

    def log_scalars(self, step: int, values: Mapping[str, Any], prefix: str = "") -> None:
        """Record the numeric ``values`` at ``step`` under ``prefix/name``."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record the run's settings (a flat or nested JSON-serializable mapping)."""

    def close(self) -> None:
        """Flush and release the backend."""


class TensorBoardTracker(Tracker):
    """Event files in ``out_dir/tensorboard`` (``tensorboard --logdir OUT/tensorboard``)."""

    def __init__(self, out_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise UserInputError(
                "--track tensorboard needs the tensorboard package: pip install tensorboard"
            ) from err
        self.writer = SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard"))

    def log_scalars(self, step: int, values: Mapping[str, Any], prefix: str = "") -> None:
        for tag, value in _scalars(values, prefix).items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.writer.add_text("params", json.dumps(dict(params), sort_keys=True, default=str))

    def close(self) -> None:
        self.writer.close()


class MlflowTracker(Tracker):
    """One MLflow run (``$MLFLOW_TRACKING_URI``, else the folder ``out_dir/mlruns``)."""

    def __init__(self, out_dir: str | Path) -> None:
        try:
            import mlflow
        except ImportError as err:
            raise UserInputError("--track mlflow needs the mlflow package: pip install mlflow") \
                from err
        self.mlflow = mlflow
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            mlflow.set_tracking_uri((Path(out_dir) / "mlruns").resolve().as_uri())
        mlflow.start_run(run_name=Path(out_dir).name)

    def log_scalars(self, step: int, values: Mapping[str, Any], prefix: str = "") -> None:
        self.mlflow.log_metrics(_scalars(values, prefix), step=step)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.mlflow.log_params({k: json.dumps(v, default=str) if isinstance(v, (dict, list))
                                else v for k, v in params.items()})

    def close(self) -> None:
        self.mlflow.end_run()


def check_kind(kind: str) -> str:
    """``kind`` if it is one of :data:`KINDS`, else a one-line :class:`UserInputError`."""
    if kind not in KINDS:
        raise UserInputError(f"--track must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind


def make_tracker(kind: str, out_dir: str | Path) -> Tracker:
    """The tracker ``kind`` (:data:`KINDS`) writing beside the run folder ``out_dir``."""
    check_kind(kind)
    if kind == "tensorboard":
        return TensorBoardTracker(out_dir)
    if kind == "mlflow":
        return MlflowTracker(out_dir)
    return Tracker()


_ACTIVE: ContextVar[Tracker | None] = ContextVar("advimage_tracker", default=None)


@contextmanager
def activate(tracker: Tracker) -> Iterator[Tracker]:
    """Make ``tracker`` the one :func:`log_scalars` reports to; closed on exit."""
    token = _ACTIVE.set(tracker)
    try:
        yield tracker
    finally:
        _ACTIVE.reset(token)
        tracker.close()


def log_scalars(step: int, values: Mapping[str, Any], prefix: str = "") -> None:
    """Report ``values`` at ``step`` to the active tracker (nothing happens without one)."""
    tracker = _ACTIVE.get()
    if tracker is not None:
        tracker.log_scalars(step, values, prefix)
