"""C2t and C2u in one batch: several step-to-flip searches sharing each model pass.

Hu, Yu et al. (NeurIPS 2019) count the raw-gradient steps a targeted (C2t) and an untargeted
(C2u) attack need to change an image's label. The two searches start from the same images and
run the same model; most images flip within a few steps, so each search alone soon runs on a
handful of rows, where a CPU pass costs about twice as much per image as at a few dozen rows
(``bench/README.md``, "Noise-signature detector"). :func:`joint_steps_to_flip` advances every
search by one step per pass: the rows of all searches still searching go through one
forward-backward pass, each search keeping its own loss, step size, ball and cap, and its rows
leave the batch as soon as they flip (active-set compaction). The counts are exactly those of
:func:`~advimage.detect.criteria.steps_to_flip` run once per search.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from advimage.attacks.base import Model, check_positive_float, check_positive_int, frozen
from advimage.attacks.loop import input_gradient
from advimage.detect.row_chunks import RowChunks
from advimage.threat import ThreatModel

__all__ = ["StepSearch", "joint_steps_to_flip"]


@dataclass(frozen=True)
class StepSearch:
    """One C2 search: steps of ``lr`` on the raw gradient inside an L-inf ball of ``radius``.

    ``target`` ``(B,)`` makes it targeted (C2t: descent on the cross-entropy to the target);
    ``None`` is untargeted (C2u: ascent on the cross-entropy to the label). At most ``cap``
    steps are counted.
    """

    lr: float
    radius: float
    cap: int
    target: Tensor | None = None


@dataclass
class _Rows:
    """The rows of one search still searching: indices into the batch and their state."""

    search: int  # index into the searches
    act: Tensor  # (b,) rows of the batch
    origin: Tensor  # (b, C, H, W) the images the ball is centred on
    label: Tensor  # (b,)
    target: Tensor | None  # (b,)
    x: Tensor  # (b, C, H, W) the current iterate x_k

    def keep(self, rows: Tensor, x_next: Tensor) -> _Rows:
        t = None if self.target is None else self.target[rows]
        return _Rows(self.search, self.act[rows], self.origin[rows], self.label[rows], t,
                     x_next[rows])


def joint_steps_to_flip(
    model: Model,
    x: Tensor,
    label: Tensor,
    searches: Sequence[StepSearch],
    *,
    bounds: tuple[float, float] = (0.0, 1.0),
    stop_at_fixed_point: bool = True,
    max_rows: int | None = None,
) -> list[Tensor]:
    """Step counts of every search, ``(B,)`` int64 each, as separate ``steps_to_flip`` calls.

    Args:
        model: Classifier returning logits; evaluated in eval mode with frozen parameters.
        x: Images ``(B, C, H, W)`` inside ``bounds``.
        label: ``(B,)`` labels to move away from.
        searches: The searches (see :class:`StepSearch`); each counts ``min(k, cap)`` for the
            first iterate ``x_k`` whose label differs from ``label``.
        bounds: Valid pixel range.
        stop_at_fixed_point: Count ``cap`` for a row whose step leaves it exactly where it
            was (a deterministic model repeats that step forever).
        max_rows: Gradient passes run in near-equal chunks of at most this many rows, each
            forward and backward in turn (faster on a CPU; ``None``: one pass).
    """
    if not searches:
        raise ValueError("joint_steps_to_flip needs at least one search")
    for s in searches:
        check_positive_int(s.cap, "cap")
    if max_rows is not None:
        check_positive_int(max_rows, "max_rows")
    steps = [(ThreatModel("linf", s.radius, bounds), check_positive_float(s.lr, "lr"))
             for s in searches]
    x = x.detach()
    counts = [torch.full((len(x),), s.cap, dtype=torch.long, device=x.device) for s in searches]
    rows = [_Rows(i, torch.arange(len(x), device=x.device), x, label, s.target, x)
            for i, s in enumerate(searches)]
    with frozen(model):
        k = 0
        while rows:
            last = [r for r in rows if k == searches[r.search].cap - 1]
            stepping = [r for r in rows if k < searches[r.search].cap - 1]
            if last:  # x_{cap-1}: only its label counts (x_cap is never judged): no backward
                _judge_last(RowChunks(model, max_rows), last, counts, k)
            rows = _step(model, stepping, steps, counts, k, stop_at_fixed_point, max_rows)
            k += 1
    return counts


def _judge_last(model: Model, last: list[_Rows], counts: list[Tensor], k: int) -> None:
    """Rows at their search's last step: a plain forward decides between ``k`` and ``k+1``."""
    with torch.no_grad():
        logits = model(torch.cat([r.x for r in last]))  # (b, K)
    for r, lg in zip(last, logits.split([len(r.act) for r in last]), strict=True):
        flipped = lg.argmax(dim=1) != r.label
        counts[r.search][r.act[flipped]] = k


def _signed_ce(logits: Tensor, cls: Tensor, sign: Tensor) -> Tensor:
    """``sign * CE(logits, cls)`` per row, ``(b,)``."""
    return sign * F.cross_entropy(logits, cls, reduction="none")


def _gradient(
    model: Model, rows: list[_Rows], max_rows: int | None
) -> tuple[Tensor, Tensor]:
    """Input gradient and logits ``(b, C, H, W), (b, K)`` of every row, in chunks.

    The loss of a row is the cross-entropy to its label (C2u, ascended) or minus the
    cross-entropy to its target (C2t): ``sign * CE(f(x), cls)`` gives each row the gradient of
    :func:`~advimage.attacks.losses.ce_loss` bit for bit. Each chunk of at most ``max_rows``
    rows runs its forward and backward before the next starts (``None``: one pass).
    """
    x = rows[0].x if len(rows) == 1 else torch.cat([r.x for r in rows])
    cls = torch.cat([r.label if r.target is None else r.target for r in rows])  # (b,)
    sign = torch.cat([torch.full((len(r.act),), 1.0 if r.target is None else -1.0,
                                 dtype=x.dtype, device=x.device) for r in rows])  # (b,)
    one_pass = max(len(x), 1)  # max_rows None: the whole batch in one pass
    grad, _, logits = input_gradient(model, x, _signed_ce, per_row=(cls, sign),
                                     max_rows=one_pass if max_rows is None else max_rows)
    return grad, logits


def _step(
    model: Model, rows: list[_Rows], steps: list[tuple[ThreatModel, float]],
    counts: list[Tensor], k: int, stop_at_fixed_point: bool, max_rows: int | None,
) -> list[_Rows]:
    """One gradient pass over every row in ``rows``; returns the rows still searching."""
    if not rows:
        return []
    grad_all, logits_all = _gradient(model, rows, max_rows)  # (b, C, H, W), (b, K)
    sizes = [len(r.act) for r in rows]
    kept = []
    for r, grad, logits in zip(rows, grad_all.split(sizes), logits_all.split(sizes),
                               strict=True):
        flipped = logits.argmax(dim=1) != r.label  # (b,) judged at x_k before stepping
        threat, lr = steps[r.search]
        x_next = threat.project(r.origin, r.x + lr * grad).detach()  # (b, C, H, W)
        done = flipped
        if stop_at_fixed_point:
            done = done | (x_next == r.x).flatten(1).all(dim=1)  # stuck: count = cap
        if not bool(done.any()):
            r.x = x_next
            kept.append(r)
            continue
        counts[r.search][r.act[flipped]] = k
        keep = (~done).nonzero()[:, 0]
        if keep.numel():
            kept.append(r.keep(keep, x_next))
    return kept
