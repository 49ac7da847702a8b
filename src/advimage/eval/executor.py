"""Where a run's batches are computed: in this process (``serial``) or on Ray workers (``ray``).

The runner (:mod:`advimage.eval.runner`) owns the run directory and is its one writer: it asks
an executor for the batches the store does not hold yet and commits each result as it arrives.
An executor only computes. Every random draw of a batch is seeded from (run seed, batch index,
defense, attack) (:func:`advimage.eval.batch.batch_seed`), so a batch computed anywhere, in any
order, on any retry, gives the rows the serial run gives.

``executor:`` in a run config, or ``advimage run --executor ray [--address ADDR]``, chooses:

- ``serial`` (default): this process, batch after batch.
- ``ray``: Ray actors (Moritz et al., 2018, "Ray: A Distributed Framework for Emerging AI
  Applications") that each build the model, defenses and attacks once and then compute batches
  sent through Ray's object store (:mod:`advimage.eval.executor_ray`).

What an actor builds is a :class:`Workload`: :class:`EvalWorkload` for an evaluation run, the
detection run kind's own (:class:`advimage.eval.detection.DetectionWork`) for ``advimage eval
detection``; both runs share the actors' retry and failure reporting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from advimage.errors import EnvironmentFailureError
from advimage.eval.config_schema import EXECUTORS, ExecutorConfig, parse_executor
from advimage.eval.run_batch import BatchResult, RunParts, RunSpec, build_parts, run_batch
from advimage.oom import oom_guard

__all__ = ["EXECUTORS", "BatchLoader", "BatchesFailedError", "EvalWorkload", "Executor",
           "ExecutorConfig", "ExecutorError", "SerialExecutor", "UnitComputer", "UnitLoader",
           "Workload", "compute_on", "parse_executor"]

BatchLoader = Callable[[int], tuple[int, Tensor, Tensor]]
"""``load(b) -> (start, x, y)``: batch ``b``'s first image index, images (B, C, H, W) and labels
(B,), on the CPU."""

UnitLoader = Callable[[int], Any]
"""``load(b)``: what unit ``b`` of any workload needs besides what its actors built (CPU data,
sent through Ray's object store)."""


class ExecutorError(EnvironmentFailureError):
    """The executor could not run: an unreachable cluster, a worker that cannot build the run,
    Ray not installed (exit 1)."""


class BatchesFailedError(ExecutorError):
    """Batches that failed on every attempt; the others are committed and ``--resume`` retries
    only the failed ones (exit 1)."""

    def __init__(self, failed: dict[int, str], attempts: int,
                 names: Mapping[int, str] | None = None,
                 then: str = "continue with --resume RUN") -> None:
        self.failed = dict(sorted(failed.items()))
        first, why = next(iter(self.failed.items()))
        names = names or {}

        def label(b: int) -> str:
            return f"{b} ({names[b]})" if b in names else str(b)

        others = [label(b) for b in self.failed if b != first]
        more = f" (also batches {', '.join(others)})" if others else ""
        super().__init__(f"batch {label(first)} failed on all {attempts} attempts{more}: {why}; "
                         f"the other batches are stored, {then}")


class UnitComputer(Protocol):
    """What a worker built from a :class:`Workload`: computes one unit (batch) at a time."""

    def compute(self, b: int, payload: Any, keep_examples: bool) -> Any:
        """Unit ``b`` from ``payload`` (what the run's :data:`UnitLoader` gave for it)."""


class Workload(Protocol):
    """What a Ray actor receives once (through the object store) and builds once."""

    def build(self, device: torch.device) -> UnitComputer:
        """The worker's models, defenses and attacks on ``device``."""


@dataclass
class EvalWorkload:
    """An evaluation run's :class:`Workload`: its spec, built with :func:`build_parts`."""

    spec: RunSpec

    def build(self, device: torch.device) -> _EvalComputer:
        """The run's parts on ``device``."""
        return _EvalComputer(build_parts(self.spec, device))


@dataclass
class _EvalComputer:
    parts: RunParts

    def compute(self, b: int, payload: tuple[int, Tensor, Tensor],
                keep_examples: bool) -> BatchResult:
        start, x, y = payload
        return compute_on(self.parts, b, start, x, y, keep_examples)


class Executor(Protocol):
    """Computes batches for the runner, which commits each :class:`BatchResult` it yields."""

    def start(self, spec: RunSpec, device: str) -> None:
        """Prepare the workers for a run (``device`` as the user gave it, e.g. ``auto``)."""

    def run(self, parts: RunParts, todo: list[int], load: BatchLoader,
            examples_batch: int | None) -> Iterator[BatchResult]:
        """Yield every batch of ``todo`` once, in any order, or raise
        :class:`BatchesFailedError` after the others; ``examples_batch`` keeps examples."""

    def close(self) -> None:
        """Release the workers (idempotent)."""


class SerialExecutor:
    """This process, batch after batch, with the runner's own :class:`RunParts`."""

    def start(self, spec: RunSpec, device: str) -> None:
        """Nothing to prepare: the runner's parts compute every batch."""

    def run(self, parts: RunParts, todo: list[int], load: BatchLoader,
            examples_batch: int | None) -> Iterator[BatchResult]:
        """Compute each batch of ``todo`` on ``parts.dev``, in order."""
        for b in todo:
            start, x, y = load(b)
            yield compute_on(parts, b, start, x, y, b == examples_batch)

    def close(self) -> None:
        """Nothing to release."""


def compute_on(parts: RunParts, b: int, start: int, x: Tensor, y: Tensor,
               keep_examples: bool) -> BatchResult:
    """One batch on ``parts.dev`` (CPU tensors in, CPU rows out); out-of-memory becomes one
    line naming the batch size (:func:`advimage.oom.oom_guard`)."""
    x, y = x.to(parts.dev), y.to(parts.dev)
    with oom_guard(parts.cfg.data.batch_size, "--batch-size (or data.batch_size)"):
        return run_batch(parts, b, start, x, y, keep_examples)
