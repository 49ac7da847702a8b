"""Data-parallel training under ``torchrun`` (PyTorch DDP; Li et al., VLDB 2020, "PyTorch
Distributed: Experiences on Accelerating Data Parallel Training").

``torchrun --nproc-per-node N -m advimage.cli train ...`` (or ``distill``, ``nim pretrain``,
``nim finetune``) starts N processes; :func:`setup`
reads torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), joins the process group
(gloo on CPU, NCCL on CUDA, one GPU per process by local rank) and returns a
:class:`DistContext`. Every process walks the same seeded sequence of global batches
(``--batch-size`` images, the order and augmentation of a single process) and trains on its
contiguous share of each (:meth:`DistContext.share`), so N processes take the same optimizer
steps on the same global batches as one process: DDP averages the gradients of equal shares,
which is the gradient of the global mean loss. Rank 0 alone writes checkpoints, logs and the
final model; every rank resumes from the same ``state.safetensors``. The command line keeps its
other side effects (the ``--track`` logger, the final output line) on rank 0
(:func:`is_rank_zero`, which reads torchrun's environment and works before and after the group).

BatchNorm: on CUDA its layers become ``SyncBatchNorm`` (statistics over the global batch, as one
process computes them); PyTorch's ``SyncBatchNorm`` does not run on CPU, so under gloo each
process normalizes with its own share's statistics and the running statistics are rank 0's
(DDP broadcasts buffers every step). Weights then match one process only approximately.
Random parts of a step that draw per row (dropout, PGD's random start in adversarial
training, ``nim finetune``'s noise) draw for the share, not the global batch: equal in
distribution, not bit for bit. ``nim pretrain`` (:mod:`advimage.studies.nim.train`) draws its
noise and masks for the global batch on every rank and takes the share, so each image gets the
draw it gets in one process.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from advimage.errors import UserInputError

__all__ = ["DistContext", "check_batch", "is_main", "is_rank_zero", "setup", "world_size"]


def _env_int(name: str, default: int) -> int:
    """torchrun's integer environment variable ``name`` (``default`` when unset)."""
    try:
        return int(os.environ.get(name, str(default)))
    except ValueError:
        raise UserInputError(f"{name} must be an integer, got {os.environ[name]!r}") from None


def world_size() -> int:
    """Processes of this torchrun job (1 when not under torchrun)."""
    return _env_int("WORLD_SIZE", 1)


def is_rank_zero() -> bool:
    """Whether this process does the job's single side effects: not under torchrun, or its
    rank 0 (torchrun's ``RANK``; valid before the process group is joined and after it is left)."""
    return world_size() <= 1 or _env_int("RANK", 0) == 0


def check_batch(batch_size: int) -> None:
    """A one-line :class:`UserInputError` when the global ``batch_size`` does not split evenly
    over torchrun's processes (nothing to do outside torchrun); call it before writing anything."""
    world = world_size()
    if world > 1 and batch_size % world:
        raise UserInputError(f"--batch-size {batch_size} does not split evenly over {world} "
                             f"torchrun processes; use a multiple of {world}")


@dataclass(frozen=True)
class DistContext:
    """This process's place in a torchrun job."""

    rank: int
    world: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes."""
        return self.rank == 0

    def share(self, t: Tensor) -> Tensor:
        """This rank's contiguous rows of a global batch ``t`` (B, ...) -> (B / world, ...)."""
        return torch.tensor_split(t, self.world)[self.rank]

    def totals(self, loss_sum: float, correct: int, seen: int) -> tuple[float, int, int]:
        """An epoch's summed loss, correct predictions and images over every rank."""
        t = torch.tensor([loss_sum, correct, seen], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t[0]), int(t[1]), int(t[2])

    def mean(self, value: float) -> float:
        """``value`` averaged over every rank (e.g. the mean loss of equal shares)."""
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t[0]) / self.world

    def wrap(self, model: nn.Module, device: torch.device, loss_hook: object = None
             ) -> nn.Module:
        """``model`` in DDP (its BatchNorm synchronized on CUDA); the caller keeps ``model``.

        With a ``loss_hook`` (distillation: it may call methods other than ``forward``, which
        DDP cannot see) the model itself, whose gradients :meth:`average_grads` averages.
        """
        if loss_hook is not None:
            return model
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            return DistributedDataParallel(model, device_ids=[device.index])
        return DistributedDataParallel(model)

    def average_grads(self, *modules: nn.Module | None) -> None:
        """Average the gradients of ``modules`` trained outside DDP (a FitNets regressor, a
        model trained through a loss hook) over every rank, as DDP does."""
        for module in modules:
            for p in [] if module is None else module.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.world

    def finish(self) -> bool:
        """Leave the process group once every rank is done with it; whether this process
        writes the results (rank 0).

        Call it after dropping the DDP wrappers. A barrier first, so no rank tears down while
        another still communicates; then the group is destroyed and collected while the
        interpreter is fully alive, so gloo's worker threads are joined here and not by a late
        destructor during interpreter shutdown, which can abort the process ("terminate called
        without an active exception") after its work is done.
        """
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
        gc.collect()
        return self.is_main


def is_main(ctx: DistContext | None) -> bool:
    """Whether this process writes: a single process, or rank 0 of a torchrun job."""
    return ctx is None or ctx.is_main


def setup(batch_size: int, device: torch.device) -> tuple[DistContext | None, torch.device]:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1; returns the context (None for a
    single process) and this process's device (``cuda:LOCAL_RANK`` on CUDA).

    Raises:
        UserInputError: ``batch_size`` not divisible by the world size (one line, before the
            process group is joined and before anything is written).
    """
    world = world_size()
    if world <= 1:
        return None, device
    check_batch(batch_size)
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, world, local), device
