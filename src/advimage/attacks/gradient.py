"""The input gradient every gradient attack takes, with Expectation over Transformation.

:func:`input_gradient` is the one place attacks differentiate the model: ``eot > 1`` averages the
gradient over that many passes (Athalye et al., 2018, "Synthesizing Robust Adversarial
Examples"), and :func:`declares_deterministic` lets a model that declares itself deterministic
take one pass. The iterative loop (:mod:`advimage.attacks.loop`) re-exports both.

A pass over a large batch runs in near-equal slices of at most :data:`GRADIENT_ROWS` rows when
the caller hands the objective its per-row tensors (``per_row``). Each slice's forward and
backward allocate and free their activations before the next slice starts, so the working set
stays small enough for glibc's malloc to reuse freed memory instead of returning it to the kernel
and faulting it back in on the next pass (an eager CPU forward+backward of the MNIST LeNet5 at
250 rows takes about 12,500 page faults). Rows of a frozen model are independent, so the values
are those of one pass up to the summation order the backend picks for a slice's size: with
slices of 32-64 rows the gradients, losses and logits are one pass's bit for bit (a LeNet5 and
the tests' digits CNN in ``tests/attacks/test_gradient_rows.py``; the reference LeNet5 and
ResNet-20 in ``bench/gradient_rows.py``, which also measures the time); oneDNN and MKL change
the last bits only in slices of about 10 rows or fewer, which near-equal slicing never makes
from a batch above 64 (its smallest slice is 32 rows).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from advimage.attacks.base import Model, check_positive_int
from advimage.model_flags import DeclaresFlags, model_flags, unwrap
from advimage.utils import chunk_sizes

__all__ = ["GRADIENT_ROWS", "declares_deterministic", "in_row_slices", "input_gradient"]

# Most rows per forward+backward pass when the objective takes its per-row tensors: ~22 MB of
# activations for the MNIST LeNet5, ~200 MB for the CIFAR ResNet-20. A sweep while choosing it
# (bench/README.md, "Gradient passes in slices") found the fastest slices at 50-84 rows for the
# one and 32-64 for the other; slices of 8 rows or fewer were slower than one whole pass.
GRADIENT_ROWS = 64


def declares_deterministic(model: Model) -> bool:
    """True only if ``model`` declares ``is_randomized`` False and so does every flag-declaring
    submodule (a deterministic wrapper around a random defense stays random).

    Flags are read by :func:`advimage.model_flags.model_flags`, as the evaluation harness reads
    them: a model that declares nothing (a plain classifier, a callable) counts as possibly
    random, so EOT skips its repeated passes only on an explicit declaration. The wrappers an
    attack puts around the model itself (``AutocastModel``, ``AtDtype``, the minimal-norm
    rounding marker: every :class:`~advimage.model_flags.Wrapper`) are seen through.
    """
    model = unwrap(model)
    if model_flags(model).is_randomized is not False:
        return False
    if isinstance(model, torch.nn.Module):
        return all(model_flags(m).is_randomized is False for m in model.modules()
                   if isinstance(m, DeclaresFlags))
    return True


def input_gradient(
    model: Model,
    x_adv: Tensor,
    objective: Callable[..., Tensor],
    eot: int = 1,
    *,
    per_row: Sequence[Tensor | None] | None = None,
    max_rows: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradient of ``objective(model(x_adv))`` w.r.t. ``x_adv``, averaged over ``eot`` passes.

    Every gradient attack goes through this function, which is what makes :func:`EOT` work for
    all of them. ``objective`` maps logits ``(B, K)`` to a per-sample loss ``(B,)``; samples are
    independent, so the gradient of the sum is each sample's own gradient.

    Args:
        per_row: The tensors (or ``None``) aligned with ``x_adv``'s rows that ``objective``
            takes after the logits: ``objective(logits, *per_row)``, each sliced like the rows.
            Given, a batch above ``max_rows`` runs in slices (module doc); ``None``:
            ``objective(logits)`` on the whole batch in one pass (it may close over the batch).
        max_rows: Most rows per pass when ``per_row`` is given; ``None``: :data:`GRADIENT_ROWS`.

    Returns:
        ``(grad (B, ...), loss (B,), logits (B, K))``, all detached; loss and logits are the
        means over the ``eot`` passes (one pass for a model that declares itself deterministic,
        see :func:`declares_deterministic`).
    """
    check_positive_int(eot, "eot")
    max_rows = GRADIENT_ROWS if max_rows is None else check_positive_int(max_rows, "max_rows")
    if eot > 1 and declares_deterministic(model):
        eot = 1  # every pass would give the same gradient
    if per_row is not None:
        per_row = _aligned(per_row, len(x_adv))
    grad_sum, loss_sum, logits_sum = _pass(model, x_adv, objective, per_row, max_rows)
    for _ in range(eot - 1):
        grad, loss, logits = _pass(model, x_adv, objective, per_row, max_rows)
        grad_sum = grad_sum + grad
        loss_sum = loss_sum + loss
        logits_sum = logits_sum + logits
    if eot > 1:
        return grad_sum / eot, loss_sum / eot, logits_sum / eot
    return grad_sum, loss_sum, logits_sum


def _aligned(per_row: Sequence[Tensor | None], n: int) -> list[Tensor | None]:
    """``per_row`` as a list, each tensor checked to have ``n`` rows."""
    for i, t in enumerate(per_row):
        if t is not None and (t.dim() == 0 or len(t) != n):
            raise ValueError(f"per_row[{i}] has shape {tuple(t.shape)}, expected {n} rows "
                             "(one per input)")
    return list(per_row)


def _pass(
    model: Model,
    x_adv: Tensor,
    objective: Callable[..., Tensor],
    per_row: list[Tensor | None] | None,
    max_rows: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """One pass over the batch, in slices of ``max_rows`` when ``per_row`` is given."""
    if per_row is None:
        return _one_pass(model, x_adv, objective)

    def one_slice(xs: Tensor, *args: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        return _one_pass(model, xs, functools.partial(_with_rows, objective, args))

    grad, loss, logits = in_row_slices(one_slice, max_rows, x_adv, *per_row)
    return grad, loss, logits


def in_row_slices(
    fn: Callable[..., tuple[Tensor, ...]], max_rows: int, x: Tensor, *per_row: Tensor | None
) -> tuple[Tensor, ...]:
    """``fn(x, *per_row)`` over near-equal slices of at most ``max_rows`` rows (module doc).

    Each of ``x`` and the ``per_row`` tensors is sliced alike (``None`` stays ``None``); the
    outputs of the slices, all per-row tensors, are concatenated along the rows. A batch that
    fits in one slice is one call.
    """
    sizes = chunk_sizes(len(x), max_rows)  # near-equal slices, none tiny
    if len(sizes) == 1:
        return fn(x, *per_row)
    cols = [[None] * len(sizes) if t is None else list(t.split(sizes)) for t in (x, *per_row)]
    parts = [fn(*args) for args in zip(*cols, strict=True)]
    return tuple(torch.cat(ts) for ts in zip(*parts, strict=True))


def _with_rows(objective: Callable[..., Tensor], args: Sequence[Tensor | None],
               logits: Tensor) -> Tensor:
    """``objective(logits, *args)``: the objective on one slice's logits and per-row tensors."""
    return objective(logits, *args)


def _one_pass(
    model: Model, x_adv: Tensor, objective: Callable[[Tensor], Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """``(grad, loss, logits)`` of one forward/backward pass at ``x_adv``, detached."""
    xg = x_adv.detach().requires_grad_(True)  # a view: no copy of the batch
    with torch.enable_grad():
        logits = model(xg)  # (B, K)
        loss = objective(logits)  # (B,)
    if loss.shape != (len(x_adv),):
        raise ValueError(f"the objective returned shape {tuple(loss.shape)}; it must return one "
                         f"loss per sample, shape ({len(x_adv)},)")
    (grad,) = torch.autograd.grad(loss.sum(), xg)
    return grad, loss.detach(), logits.detach()
