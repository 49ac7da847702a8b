"""One run of APGD for the L1 threat model (l1-APGD), with its sparsity schedule.

Croce & Hein, "Mind the box: l1-APGD for sparse adversarial attacks on image classifiers",
ICML 2021 (Sec. 3 and Algorithm 1; the reference code is ``pyautoattack``'s
``autopgd_base.py``, norm ``'L1'``). Steepest ascent under L1 changes a single coordinate, which
the box then blocks; l1-APGD instead steps along the sign of the ``k`` largest gradient
coordinates, ``x' = P(x + eta * sign(g_k) / ||sign(g_k)||_1)``, with ``P`` the exact projection
onto the L1 ball *within the box* (:func:`advimage.lp_balls.project_l1_box`). The sparsity
``k`` adapts: it starts at 20% of the features and, every ``max(4% of the steps, 1)``
iterations, becomes ``||x_best - x||_0 / 1.5``; where the best point got sparser by more than 5%
the step resets to ``eps`` and the run continues from the best point, elsewhere the step is
divided by 1.5 (never below ``eps / 10``). No momentum (the reference uses none for L1).

Departures, deliberate: the random start is uniform in the L1 ball within the box
(:meth:`advimage.threat.ThreatModel.random_start`) rather than a projected Gaussian; samples
are dropped once adversarial when ``early_stop`` is on, as in :mod:`advimage.attacks.apgd`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from advimage.attacks.losses import is_success
from advimage.attacks.restarts import ActiveRows, RunOutcome
from advimage.lp_balls import lp_norms, project_l1_box, rows
from advimage.threat import ThreatModel

__all__ = ["apgd_l1_run"]

_TOPK_START = 0.2  # fraction of features in the first sparse step
_SPARSER = 0.95  # the best point got sparser when ||.||_0 fell below this fraction
_SPARSITY_MARGIN = 1.5  # k = ||x_best - x||_0 / 1.5
_STEP_DECAY = 1.5  # step divided by this where sparsity did not drop
_STEP_FLOOR = 10.0  # step never below eps / 10
_CHECK_EVERY = 0.04  # fraction of the steps between checks
# (logits, loss, grad) at a point, for the given labels and loss target
Forward = Callable[[Tensor, Tensor, Tensor | None], tuple[Tensor, Tensor, Tensor]]


def _sparse_step(grad: Tensor, topk: Tensor) -> Tensor:
    """``sign`` of the ``topk`` (fraction, per row) largest ``|grad|`` coordinates, unit L1."""
    flat = grad.abs().flatten(1)
    n = flat.shape[1]
    sorted_abs = flat.sort(dim=1).values
    at = ((1.0 - topk) * n).clamp(0, n - 1).long().unsqueeze(1)  # (B, 1)
    thr = rows(sorted_abs.gather(1, at).squeeze(1), grad)
    s = grad.sign() * (grad.abs() >= thr)
    return s / rows(lp_norms(s, "l1") + 1e-10, s)


def apgd_l1_run(
    threat: ThreatModel,
    steps: int,
    early_stop: bool,
    forward: Forward,
    s: dict[str, Tensor],
    generator: torch.Generator,
    x_init: Tensor | None = None,
    judge: bool = True,
) -> RunOutcome:
    """One l1-APGD run on the rows in ``s`` (``x``, ``y``, optional ``target`` deciding
    success and ``loss_target`` steering the loss).

    Args (besides the state):
        x_init: Start here (inside the threat model) instead of a random start; the sparsity
            ``k`` then starts at ``||x_init - x||_0 / 1.5``, as the reference's custom start
            does (the stages of :mod:`advimage.attacks.apgd_largereps`).
        judge: Whether success counts; ``False`` (a stage at a larger radius than the
            threat model's) returns every row's highest-loss iterate, none successful.

    Returns:
        ``(x_adv, success, loss)`` as APGD's runs do: the first adversarial iterate, else the
        highest-loss one.
    """
    x = s["x"]
    eps = float(threat.eps)
    s["x_adv"] = threat.random_start(x, generator) if x_init is None else x_init
    rows_ = ActiveRows(s["x_adv"])
    logits, loss, s["grad"] = forward(s["x_adv"], s["y"], s.get("loss_target"))
    n_fts = x[0].numel()
    _start_state(s, loss, eps, n_fts, custom=x_init is not None)
    check = max(int(_CHECK_EVERY * steps), 1)
    for i in range(steps + 1):
        ok = is_success(logits, s["y"], s.get("target")) if judge else None
        if ok is not None and not early_stop:
            rows_.record(ok, s["x_adv"])
        elif ok is not None and bool(ok.any()):
            keep = rows_.retire(ok, s["x_adv"])
            if keep.numel() == 0:
                return rows_.outcome()
            s = {k: v.index_select(0, keep) for k, v in s.items()}
            loss = loss.index_select(0, keep)
        if i > 0:
            improved = loss > s["loss_best"]
            s["loss_best"] = torch.where(improved, loss, s["loss_best"])
            s["x_best"] = torch.where(rows(improved, x), s["x_adv"], s["x_best"])
            s["grad_best"] = torch.where(rows(improved, x), s["grad"], s["grad_best"])
            if i % check == 0:
                _sparsity_check(s, eps, n_fts)
        if i == steps:
            break
        xc = s["x"]
        x_new = s["x_adv"] + rows(s["step"], xc) * _sparse_step(s["grad"], s["topk"])
        s["x_adv"] = (xc + project_l1_box(x_new - xc, xc, torch.full_like(s["step"], eps),
                                          threat.bounds)).clamp(*threat.bounds)
        logits, loss, s["grad"] = forward(s["x_adv"], s["y"], s.get("loss_target"))
    rows_.finish(s["x_best"], s["loss_best"])
    return rows_.outcome()


def _start_state(s: dict[str, Tensor], loss: Tensor, eps: float, n_fts: int, custom: bool) -> None:
    """Best point, step, sparsity ``k`` and last sparsity of a run starting at ``s["x_adv"]``:
    ``k`` is 20% of the features after a random start, ``||x_adv - x||_0 / 1.5`` after a
    custom one (the reference's ``x_init``)."""
    x = s["x"]
    full = torch.full((len(x),), 1.0, dtype=x.dtype, device=x.device)
    if custom:
        sp = ((s["x_adv"] - x).flatten(1) != 0).sum(dim=1).to(x.dtype)
        topk, sp_old = sp / n_fts / _SPARSITY_MARGIN, sp
    else:
        topk, sp_old = full * _TOPK_START, full * float(n_fts)
    s.update(
        x_best=s["x_adv"].clone(), grad_best=s["grad"].clone(), loss_best=loss.clone(),
        step=full * eps, topk=topk, sp_old=sp_old,
    )


def _sparsity_check(s: dict[str, Tensor], eps: float, n_fts: int) -> None:
    """The reference's sparsity schedule at a checkpoint, in place on ``s``."""
    sp_curr = ((s["x_best"] - s["x"]).flatten(1) != 0).sum(dim=1).to(s["step"].dtype)
    sparser = sp_curr / s["sp_old"] < _SPARSER
    s["topk"] = sp_curr / n_fts / _SPARSITY_MARGIN
    s["step"] = torch.where(sparser, torch.full_like(s["step"], eps), s["step"] / _STEP_DECAY)
    s["step"] = s["step"].clamp(eps / _STEP_FLOOR, eps)
    s["sp_old"] = sp_curr
    back = rows(sparser, s["x"])
    s["x_adv"] = torch.where(back, s["x_best"], s["x_adv"])
    s["grad"] = torch.where(back, s["grad_best"], s["grad"])
