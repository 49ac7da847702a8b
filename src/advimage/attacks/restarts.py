"""Attack only the rows not yet fooled, and keep each row's best point over restarts.

The bookkeeping every batched attack in this package shares, written once:

* :class:`ActiveRows`, inside one run: the rows of the batch still attacked, and the result of
  the rows already finished. A row that fools the model is written to the result and dropped
  from later passes (the early stop of Madry et al.'s PGD loop, of Croce & Hein's APGD, ICML
  2020, and of the Square Attack's random search, Andriushchenko et al., ECCV 2020), so a batch
  gets cheaper as it is fooled.
* :class:`BestSoFar` and :func:`attack_remaining`, across runs: each restart (or each member of
  an AutoAttack ensemble, Croce & Hein, 2020) attacks only the rows no earlier run fooled, and a
  row keeps the best point found: a successful one, else the one with the highest loss.

Losses are maximised throughout. Only selections and copies happen here (no arithmetic, no
random draws), so moving an attack onto these helpers changes none of its results.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import overload

import torch
from torch import Tensor

__all__ = ["ActiveRows", "BestSoFar", "RunOutcome", "attack_remaining", "rows_view", "take"]

# What one run on some rows returns: points (n, ...), success (n,), loss (n,) or None
# (None: a run that judges success only; then success alone decides which point is kept).
RunOutcome = tuple[Tensor, Tensor, Tensor | None]


def rows_view(mask: Tensor, like: Tensor) -> Tensor:
    """Per-row values ``(B,)`` shaped to broadcast against ``like`` ``(B, ...)``."""
    return mask.view(-1, *([1] * (like.dim() - 1)))


@overload
def take(t: Tensor, idx: Tensor) -> Tensor: ...
@overload
def take(t: None, idx: Tensor) -> None: ...
def take(t: Tensor | None, idx: Tensor) -> Tensor | None:
    """Rows ``idx`` (1-d long) of a per-row tensor; ``None`` (e.g. no target) stays ``None``."""
    return None if t is None else t.index_select(0, idx)


class ActiveRows:
    """The rows of one run still attacked, and the per-row result of the whole batch.

    The caller keeps its per-row state (iterate, labels, momentum ...) for the active rows only
    and subsets it with the ``keep`` indices :meth:`retire` returns.

    Attributes:
        x: ``(B, ...)`` result points; rows still active hold the starting point until
            :meth:`finish` writes them.
        success: ``(B,)`` bool, rows whose result fooled the model.
        loss: ``(B,)`` loss of the result point where known, else ``-inf``.
        idx: ``(b,)`` rows of the batch still active, in order.
    """

    def __init__(self, x_start: Tensor) -> None:
        n = len(x_start)
        self.x = x_start.clone()
        self.success = torch.zeros(n, dtype=torch.bool, device=x_start.device)
        self.loss = torch.full((n,), -math.inf, dtype=x_start.dtype, device=x_start.device)
        self.idx = torch.arange(n, device=x_start.device)

    def retire(self, ok: Tensor, x_rows: Tensor, loss_rows: Tensor | None = None) -> Tensor:
        """Write the active rows ``ok`` ``(b,)`` as successes and stop attacking them.

        Args:
            ok: Which active rows fooled the model.
            x_rows: The active rows' current points ``(b, ...)``.
            loss_rows: Their loss ``(b,)``, if the caller has it.

        Returns:
            Indices into the active rows of those that stay active (empty: all done).
        """
        hit = self.idx[ok]
        self.x.index_copy_(0, hit, x_rows[ok])
        self.success.index_fill_(0, hit, True)
        if loss_rows is not None:
            self.loss.index_copy_(0, hit, loss_rows[ok].to(self.loss.dtype))
        keep = (~ok).nonzero().flatten()
        self.idx = self.idx.index_select(0, keep)
        return keep

    def record(self, ok: Tensor, x_rows: Tensor) -> None:
        """Keep the first successful point of active rows without dropping any (no host sync)."""
        idx = self.idx
        prev = self.success.index_select(0, idx)
        new = ok & ~prev
        cur = self.x.index_select(0, idx)
        self.x.index_copy_(0, idx, torch.where(rows_view(new, x_rows), x_rows, cur))
        self.success.index_copy_(0, idx, prev | ok)

    def finish(
        self, x_rows: Tensor, loss_rows: Tensor | None = None, success_rows: Tensor | None = None
    ) -> None:
        """Write the active rows' final points; rows that already succeeded keep theirs.

        Args:
            x_rows: Final points of the active rows ``(b, ...)``.
            loss_rows: Their loss ``(b,)``, if known.
            success_rows: Whether they fool the model ``(b,)``, if known.
        """
        idx = self.idx
        prev = self.success.index_select(0, idx)
        cur = self.x.index_select(0, idx)
        self.x.index_copy_(0, idx, torch.where(rows_view(prev, x_rows), cur, x_rows))
        if loss_rows is not None:
            self.loss.index_copy_(0, idx, loss_rows.to(self.loss.dtype))
        if success_rows is not None:
            self.success.index_copy_(0, idx, prev | success_rows)

    def outcome(self) -> RunOutcome:
        """``(x, success, loss)`` of the whole batch, as :func:`attack_remaining` expects."""
        return self.x, self.success, self.loss


class BestSoFar:
    """Each row's best point over several runs: successful first, else highest loss.

    Attributes:
        x: ``(B, ...)`` best points; the clean input until a run improves on it.
        done: ``(B,)`` bool, rows already fooled (never attacked again).
        loss: ``(B,)`` highest loss seen for rows not done (``-inf`` before any run).
    """

    def __init__(self, x: Tensor, done: Tensor | None = None) -> None:
        """Start from the clean batch ``x``; ``done`` marks rows that need no attack (e.g.
        already misclassified, as in the AutoAttack reference code)."""
        n = len(x)
        self.x = x.clone()
        self.done = (
            torch.zeros(n, dtype=torch.bool, device=x.device) if done is None else done.clone()
        )
        self.loss = torch.full((n,), -math.inf, dtype=x.dtype, device=x.device)

    def todo(self) -> Tensor:
        """Indices ``(m,)`` of the rows not yet fooled."""
        return (~self.done).nonzero().flatten()

    def merge(
        self, idx: Tensor, x_rows: Tensor, success: Tensor, loss: Tensor | None = None
    ) -> None:
        """Fold one run on rows ``idx`` (all not done) into the best so far.

        A row takes the run's point if it succeeded or (with ``loss``) raised the row's loss.
        """
        cur_loss = self.loss.index_select(0, idx)
        better = success if loss is None else success | (loss > cur_loss)
        cur = self.x.index_select(0, idx)
        self.x.index_copy_(0, idx, torch.where(rows_view(better, x_rows), x_rows, cur))
        if loss is not None:
            self.loss.index_copy_(0, idx, torch.where(better, loss, cur_loss).to(self.loss.dtype))
        self.done.index_copy_(0, idx, success)


def attack_remaining(
    best: BestSoFar,
    run: Callable[[Tensor], RunOutcome],
    *,
    restarts: int = 1,
    chunk_size: int | None = None,
) -> BestSoFar:
    """Run ``run`` ``restarts`` times, each time on the rows ``best`` has not fooled yet.

    Args:
        best: The result so far; updated in place and returned.
        run: Attacks the rows given as indices ``(m,)`` of the batch and returns their
            :data:`RunOutcome`.
        restarts: How many runs; stops early once every row is fooled.
        chunk_size: Most rows per ``run`` call (``None``: all remaining rows at once).

    Returns:
        ``best``.
    """
    for _ in range(restarts):
        todo = best.todo()
        if todo.numel() == 0:
            break
        for chunk in todo.split(chunk_size or todo.numel()):
            best.merge(chunk, *run(chunk))
    return best
