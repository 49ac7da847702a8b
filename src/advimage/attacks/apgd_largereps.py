"""l1-APGD with the large-radius schedule (``use_largereps``) of L1 AutoAttack.

Croce & Hein, "Mind the box: l1-APGD for sparse adversarial attacks on image classifiers",
ICML 2021; the reference code is ``pyautoattack``'s ``autopgd_base.py`` (``use_largereps``,
``APGDAttack.decr_eps_pgd``), which L1 AutoAttack's ``standard`` version turns on for APGD-CE
and APGD-T. One run is three l1-APGD runs (:func:`advimage.attacks.apgd_l1.apgd_l1_run`) at
shrinking radii, ``3 eps``, ``2 eps`` and ``eps``, with 30%, 30% and the remaining 40% of the
steps (``ceil`` of the first two, as the reference rounds). The first stage starts from
Gaussian noise projected onto the ``3 eps`` L1 ball within the box (a sparse point: the
projection soft-thresholds); each later stage starts from the previous stage's highest-loss
point projected onto its own ball, with the sparsity ``k`` taken from that start. The larger
balls let the sparse steps find the few coordinates worth changing before the budget
tightens. Only the last stage, at ``eps``, judges success; the earlier ones return their
highest-loss point whether or not it fooled the model at the larger radius.

Departures, deliberate: the noise comes from the attack's seeded generator (the reference
reseeds the global RNG); the reference's schedule gives an empty or negative last stage for
``steps < 5`` (4 steps: 2 + 2 + 0), which advimage refuses in one line instead.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from advimage.attacks.apgd_l1 import Forward, apgd_l1_run
from advimage.attacks.restarts import RunOutcome
from advimage.lp_balls import project_l1_box
from advimage.threat import ThreatModel

__all__ = ["LARGEREPS_MIN_STEPS", "apgd_l1_largereps_run", "largereps_schedule"]

_RADII = (3.0, 2.0, 1.0)  # stage radii as multiples of eps
_FRACTIONS = (0.3, 0.3)  # steps of the first two stages; the last gets the rest
LARGEREPS_MIN_STEPS = 5  # fewest steps giving every stage at least one step (3 works, 4 not)


def largereps_schedule(eps: float, steps: int) -> list[tuple[float, int]]:
    """``(radius, steps)`` of the three stages, as the reference computes them.

    Args:
        eps: Radius of the threat model.
        steps: Total steps of the run (at least :data:`LARGEREPS_MIN_STEPS`).

    Returns:
        ``[(3 eps, ceil(0.3 steps)), (2 eps, ceil(0.3 steps)), (eps, the rest)]``.
    """
    if steps < LARGEREPS_MIN_STEPS:
        raise ValueError(
            f"use_largereps needs steps >= {LARGEREPS_MIN_STEPS} (three stages of 30%, 30% "
            f"and 40% of the steps), got {steps}"
        )
    first = [math.ceil(f * steps) for f in _FRACTIONS]
    iters = [*first, steps - sum(first)]
    return [(r * eps, n) for r, n in zip(_RADII, iters, strict=True)]


def _into_ball(x: Tensor, x_start: Tensor, radius: float, bounds: tuple[float, float]) -> Tensor:
    """``x_start`` projected onto the L1 ball of ``radius`` around ``x`` within the box."""
    eps = torch.full((len(x),), radius, dtype=x.dtype, device=x.device)
    return (x + project_l1_box(x_start - x, x, eps, bounds)).clamp(*bounds)


def apgd_l1_largereps_run(
    threat: ThreatModel,
    steps: int,
    early_stop: bool,
    forward: Forward,
    s: dict[str, Tensor],
    generator: torch.Generator,
) -> RunOutcome:
    """One l1-APGD run with the large-radius schedule on the rows in ``s`` (``x``, ``y``,
    optional ``target`` and ``loss_target``, as :func:`~.apgd_l1.apgd_l1_run` takes them).

    Returns:
        ``(x_adv, success, loss)`` of the last stage (radius ``eps``): the first adversarial
        iterate, else the highest-loss one.
    """
    x = s["x"]
    stages = largereps_schedule(float(threat.eps), steps)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x_start = x + noise
    for radius, n_steps in stages[:-1]:  # larger balls: success does not count there
        x_start = _into_ball(x, x_start, radius, threat.bounds)
        x_start = apgd_l1_run(ThreatModel("l1", radius, threat.bounds), n_steps, early_stop,
                              forward, dict(s), generator, x_init=x_start, judge=False)[0]
    x_start = _into_ball(x, x_start, float(threat.eps), threat.bounds)
    return apgd_l1_run(threat, stages[-1][1], early_stop, forward, dict(s), generator,
                       x_init=x_start)
