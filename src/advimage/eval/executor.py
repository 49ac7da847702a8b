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
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from torch import Tensor

from advimage.errors import EnvironmentFailureError
from advimage.eval.config_schema import EXECUTORS, ExecutorConfig, parse_executor
from advimage.eval.run_batch import BatchResult, RunParts, RunSpec, run_batch
from advimage.oom import oom_guard

__all__ = ["EXECUTORS", "BatchLoader", "BatchesFailedError", "Executor", "ExecutorConfig",
           "ExecutorError", "SerialExecutor", "compute_on", "parse_executor"]

BatchLoader = Callable[[int], tuple[int, Tensor, Tensor]]
"""``load(b) -> (start, x, y)``: batch ``b``'s first image index, images (B, C, H, W) and labels
(B,), on the CPU."""


class ExecutorError(EnvironmentFailureError):
    """The executor could not run: an unreachable cluster, a worker that cannot build the run,
    Ray not installed (exit 1)."""


class BatchesFailedError(ExecutorError):
    """Batches that failed on every attempt; the others are committed and ``--resume`` retries
    only the failed ones (exit 1)."""

    def __init__(self, failed: dict[int, str], attempts: int) -> None:
        self.failed = dict(sorted(failed.items()))
        first, why = next(iter(self.failed.items()))
        others = [b for b in self.failed if b != first]
        more = f" (also batches {', '.join(map(str, others))})" if others else ""
        super().__init__(f"batch {first} failed on all {attempts} attempts{more}: {why}; the "
                         "other batches are stored, continue with --resume RUN")


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
