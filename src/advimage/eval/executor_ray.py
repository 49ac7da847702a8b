"""The Ray executor: actors that build a run once and compute its batches.

Each actor receives the :class:`~advimage.eval.run_batch.RunSpec` (config, model, surrogates)
through Ray's object store, builds the defended models and attacks once, and computes the
batches the driver sends it, also through the object store (any
:class:`~advimage.eval.executor.Workload` likewise, e.g. a detection run's model, detector,
images and attacks: :meth:`RayExecutor.start_workloads`, :meth:`RayExecutor.units`): a
dataset root or a model file that exists only on the driver works (Moritz et al., 2018,
"Ray: A Distributed Framework for Emerging AI Applications"). Defense options that name
files (a cache index, a NIM checkpoint) must exist on every worker; a worker that cannot build
the run is a one-line :class:`~advimage.eval.executor.ExecutorError`.

The driver keeps two batches queued per actor. A batch whose actor died (killed, out of memory,
node lost) or raised is sent again, to whichever actor is free, up to ``max_retries`` more
times; a dead actor is replaced. Batches that fail every attempt are reported by index
(:class:`~advimage.eval.executor.BatchesFailedError`) after the others are committed.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections import deque
from collections.abc import Iterator
from typing import Any

import torch

from advimage.eval.config_schema import ExecutorConfig
from advimage.eval.executor import (
    BatchesFailedError,
    BatchLoader,
    EvalWorkload,
    ExecutorError,
    UnitComputer,
    UnitLoader,
    Workload,
)
from advimage.eval.run_batch import BatchResult, RunParts, RunSpec
from advimage.utils import resolve_device

__all__ = ["RayExecutor", "check_address"]

log = logging.getLogger(__name__)

QUEUE_PER_WORKER = 2  # batches in flight per actor: one computing, one waiting in its queue


Job = tuple[int, int]  # (run: its index in the executor's specs, batch index)
RunJobs = tuple[list[int], "BatchLoader | UnitLoader", "int | None"]  # todo, loader, examples


class _Worker:
    """A Ray actor's state: the parts of every run it serves (one, or a sweep's), built once."""

    def __init__(self, device: str, threads: int, *work: Workload) -> None:
        torch.set_num_threads(threads)
        self.parts: list[UnitComputer] = [w.build(resolve_device(device)) for w in work]

    def ready(self) -> int:
        """The actor's process id, once the parts are built."""
        return os.getpid()

    def compute(self, job: Job, payload: Any, keep_examples: bool) -> Any:
        """Batch ``job[1]`` of run ``job[0]`` (for a run, ``(start, images, labels)`` on the
        CPU)."""
        return self.parts[job[0]].compute(job[1], payload, keep_examples)


def check_address(address: str, timeout: float = 5.0) -> None:
    """Refuse in one line a Ray address whose host does not accept connections.

    ``ray.init`` retries an unreachable cluster for minutes; a TCP connect answers in seconds.
    ``auto`` and ``local`` are left to Ray.

    Raises:
        ExecutorError: ``cannot reach the Ray cluster at ADDR: REASON``.
    """
    if address in ("auto", "local"):
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ExecutorError(f"Ray address must be HOST:PORT or ray://HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise ExecutorError(f"cannot reach the Ray cluster at {address}: "
                            f"{err.strerror or err}; start one with `ray start --head` or "
                            "check --address") from None


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ExecutorError("the Ray executor needs Ray: pip install 'advimage[ray]'") from None
    return ray


def _why(err: BaseException) -> str:
    """One line saying why a Ray call failed: the worker's own error, or how it died."""
    ray = _ray()
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    if getattr(err, "actor_init_failed", False):  # the traceback's last line names the error
        return lines[-1] if lines else "the worker's set-up raised"
    if isinstance(err, ray.exceptions.OutOfMemoryError) or (
            isinstance(err, ray.exceptions.RayActorError)
            and re.search(r"memory monitor|out of memory|\boom\b", str(err).lower())):
        return ("the Ray worker ran out of memory and was killed; lower data.batch_size or "
                "give each worker more memory")
    cause = getattr(err, "cause", None)
    if isinstance(cause, ray.exceptions.RayTaskError):
        cause = getattr(cause, "cause", cause)
    if isinstance(cause, BaseException) and not isinstance(cause, ray.exceptions.RayError):
        own = str(cause).strip().splitlines()
        return f"{type(cause).__name__}: {own[-1] if own else ''}".rstrip(": ")
    if isinstance(err, ray.exceptions.RayActorError):
        return "the Ray worker died (killed, crashed or its node was lost)"
    return lines[-1] if lines else type(err).__name__


class RayExecutor:
    """Batches on Ray actors (local instance, or a cluster by ``address``); see the module."""

    def __init__(self, settings: ExecutorConfig) -> None:
        self.settings = settings
        self._started_ray = False
        self._actors: list[Any] = []
        self._spec_refs: list[Any] = []
        self._device = "cpu"
        self._replacements = 0

    def start(self, spec: RunSpec, device: str) -> None:
        """Connect to (or start) Ray, put the spec in the object store, start the actors."""
        self.start_many([spec], device)

    def start_many(self, specs: list[RunSpec], device: str) -> None:
        """:meth:`start` for several runs (a sweep): every actor builds every run."""
        for spec in specs:  # the driver's copy only labels the store's rows in a Ray run
            for m in [spec.model, *spec.surrogates.values()]:
                m.cpu()
        self.start_workloads([EvalWorkload(spec) for spec in specs], device)

    def start_workloads(self, work: list[Workload], device: str) -> None:
        """Connect to (or start) Ray, put ``work`` in the object store, start the actors (each
        builds every workload once)."""
        ray = _ray()
        s = self.settings
        if s.address:
            check_address(s.address)
        if not ray.is_initialized():
            ray.init(address=s.address, log_to_driver=False, include_dashboard=False,
                     runtime_env={"env_vars": {"OMP_NUM_THREADS": str(s.cpus_per_worker)}})
            self._started_ray = True
        self._spec_refs = [ray.put(w) for w in work]
        self._device = device
        for _ in range(self._n_workers(ray, device)):
            self._actors.append(self._new_actor(ray))
        self._wait_ready(ray)

    def _n_workers(self, ray: Any, device: str) -> int:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n = self.settings.workers or max(1, cpus // self.settings.cpus_per_worker)
        if self._gpus(ray, n, device) == 0 and self.settings.gpus_per_worker:
            raise ExecutorError(f"executor.gpus_per_worker={self.settings.gpus_per_worker} but "
                                "the Ray cluster has no GPUs")
        return n

    def _gpus(self, ray: Any, n: int, device: str) -> float:
        """GPUs per actor: as configured, else the cluster's GPUs shared evenly (none on cpu)."""
        if self.settings.gpus_per_worker is not None:
            return float(self.settings.gpus_per_worker)
        total = float(ray.cluster_resources().get("GPU", 0))
        if device == "cpu" or total == 0:
            return 0.0
        return min(1.0, total / n)

    def _new_actor(self, ray: Any) -> Any:
        s = self.settings
        n = s.workers or max(1, len(self._actors))
        cls = ray.remote(num_cpus=s.cpus_per_worker, num_gpus=self._gpus(ray, n, self._device),
                         max_restarts=0)(_Worker)
        return cls.remote(self._device, s.cpus_per_worker, *self._spec_refs)

    def _wait_ready(self, ray: Any) -> None:
        """Every actor built the run, or one line saying why one could not."""
        try:
            ray.get([a.ready.remote() for a in self._actors])
        except ray.exceptions.RayError as err:
            raise ExecutorError(f"a Ray worker could not build the run: {_why(err)}") from None

    def run(self, parts: RunParts, todo: list[int], load: BatchLoader,
            examples_batch: int | None) -> Iterator[BatchResult]:
        """Yield each batch of ``todo`` as an actor finishes it; retry failed ones elsewhere."""
        yield from self.units(todo, load, examples_batch)

    def units(self, todo: list[int], load: UnitLoader, keep: int | None = None,
              **report: Any) -> Iterator[Any]:
        """Yield the result of each unit of ``todo`` of the one workload as an actor finishes
        it (``keep``: the unit that keeps examples); then raise :class:`BatchesFailedError`
        for those that failed every attempt (``report``: its ``names`` and ``then``)."""
        failed: dict[Job, str] = {}
        for _, result in self.run_many([(todo, load, keep)], failed):
            yield result
        if failed:
            raise BatchesFailedError({b: why for (_, b), why in failed.items()},
                                     self.settings.max_retries + 1, **report)

    def run_many(self, runs: list[RunJobs], failed: dict[Job, str]
                 ) -> Iterator[tuple[int, Any]]:
        """Yield ``(run, batch result)`` for the batches of every run, filling the actors from
        one queue; ``failed`` receives the jobs that failed every attempt."""
        ray = _ray()
        pending: deque[Job] = deque((r, b) for r, (todo, _, _) in enumerate(runs) for b in todo)
        attempts: dict[Job, int] = {}
        refs: dict[Job, Any] = {}
        inflight: dict[Any, tuple[Job, Any]] = {}
        load_per_actor = {id(a): 0 for a in self._actors}
        while pending or inflight:
            self._submit(ray, pending, refs, inflight, load_per_actor, runs)
            if not inflight:
                break
            (ref,), _ = ray.wait(list(inflight), num_returns=1)
            b, actor = inflight.pop(ref)
            if id(actor) in load_per_actor:  # not if it died and was replaced already
                load_per_actor[id(actor)] -= 1
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as err:
                self._failure(ray, err, b, actor, attempts, failed, pending, load_per_actor)
                continue
            refs.pop(b, None)
            yield b[0], result
        failed.update({b: "no Ray worker left to run it" for b in pending})

    def _submit(self, ray: Any, pending: deque[Job], refs: dict[Job, Any],
                inflight: dict[Any, tuple[Job, Any]], load_per_actor: dict[int, int],
                runs: list[RunJobs]) -> None:
        """Queue batches on actors with room (fewest queued first), data via the object store."""
        while pending:
            actor = min(self._actors, key=lambda a: load_per_actor[id(a)], default=None)
            if actor is None or load_per_actor[id(actor)] >= QUEUE_PER_WORKER:
                return
            job = pending.popleft()
            _, load, examples_batch = runs[job[0]]
            if job not in refs:  # put once, sent again on a retry
                refs[job] = ray.put(load(job[1]))
            ref = actor.compute.remote(job, refs[job], job[1] == examples_batch)
            inflight[ref] = (job, actor)
            load_per_actor[id(actor)] += 1

    def _failure(self, ray: Any, err: BaseException, b: Job, actor: Any,
                 attempts: dict[Job, int], failed: dict[Job, str], pending: deque[Job],
                 load_per_actor: dict[int, int]) -> None:
        """Count a failed attempt of job ``b``; requeue it or give up; replace a dead actor."""
        why = _why(err)
        attempts[b] = attempts.get(b, 0) + 1
        log.warning("run %d batch %d failed (attempt %d of %d): %s", b[0], b[1], attempts[b],
                    self.settings.max_retries + 1, why)
        if attempts[b] > self.settings.max_retries:
            failed[b] = why
        else:
            pending.appendleft(b)
        dead = isinstance(err, ray.exceptions.RayActorError) and not isinstance(
            err, ray.exceptions.ActorUnavailableError)
        if dead and actor in self._actors:
            self._actors.remove(actor)
            del load_per_actor[id(actor)]
            limit = (self.settings.max_retries + 1) * max(1, self.settings.workers or 2)
            if self._replacements < limit:
                self._replacements += 1
                new = self._new_actor(ray)
                self._actors.append(new)
                load_per_actor[id(new)] = 0

    def close(self) -> None:
        """Kill the actors; shut Ray down when this executor started it."""
        if not self._actors and not self._started_ray:
            return
        ray = _ray()
        for actor in self._actors:
            ray.kill(actor)
        self._actors.clear()
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False
