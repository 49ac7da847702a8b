"""AutoAttack: APGD-CE, APGD-T, FAB-T and Square, each on the points still robust.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020. No single attack is reliable (gradient masking fools PGD,
a weak step size fools everything), so AutoAttack runs complementary parameter-free attacks in
sequence and counts a point as robust only if all of them fail. Each attack is run only on the
points that every earlier attack failed on, so the weak points cost one attack and the expensive
later attacks see few points. The versions are the original's (``pyautoattack``'s
``_set_version``): ``standard`` runs APGD-CE (100 steps, no restarts), APGD-T (targeted DLR, 9
target classes, 100 steps), FAB-T (9 target classes, 100 steps) and Square (5000 queries, the
un-rescaled ``p`` schedule); ``plus`` runs APGD-CE and APGD-DLR with 5 restarts, FAB with 5
restarts, Square, APGD-T and FAB-T; ``rand`` (randomized defenses) runs APGD-CE and APGD-DLR
with EOT over 20 gradient draws. ``fast`` (advimage's own: 25 steps, 3 targets, 500 queries, no
FAB-T) is for CI and quick looks and is weaker.

L1 (Croce & Hein, "Mind the box", ICML 2021; the original's ``_set_version`` for ``'L1'``):
``standard`` runs APGD-CE with 5 restarts and APGD-T with 5 target classes, both with the
large-radius schedule (``use_largereps``: :mod:`advimage.attacks.apgd_largereps`), then FAB-T
and Square in L1 with the budgets above. ``plus`` and ``rand`` in L1 are the L-inf/L2 members
in L1 without that schedule, as the original runs them (it only logs "please check" for
``plus``); ``fast`` in L1 keeps the schedule on its 25-step APGD members.

Departure in ``rand``: the original judges each member's result on one forward pass of the
randomized model; advimage judges it on ``RAND_DRAWS`` passes and counts a point as fooled only
if most of them misclassify it, so one lucky draw of the defense's randomness does not decide.

Like the reference implementation (its ``bs``, 250), each member attacks the remaining points
in chunks of at most ``batch_size``: memory stays bounded, and on a CPU larger batches are slower
per point (activations above glibc's 32 MiB mmap threshold are fresh pages on every pass: LeNet5
queries cost 2x per point at 900 points than at 256). As in the reference, each member starts
every chunk from ``seed`` (the reference reseeds in every ``perturb`` call). The APGD members
compute the reference's iterates and Square (``reference_draws``, L-inf) proposes its squares,
so on a CPU, with the same ``batch_size`` and seed, the L-inf ensemble fools exactly the points
the original fools (``tests/attacks/test_ensemble.py``; in L2 and L1 Square draws a window per
image, the paper's code, where the original draws one per batch).

The result per point is the first successful adversarial example found, else the clean point;
:meth:`AutoAttack.run` also returns robust accuracy and wall time after each attack.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from advimage.attacks.apgd import APGD, APGDDLR
from advimage.attacks.apgd_targeted import APGDT
from advimage.attacks.base import (
    Attack,
    AttackResult,
    Model,
    check_positive_float,
    check_positive_int,
)
from advimage.attacks.fab import FAB, FABT
from advimage.attacks.losses import is_success
from advimage.attacks.registry import register_attack
from advimage.attacks.restarts import BestSoFar, RunOutcome, attack_remaining, take
from advimage.attacks.square import Square

__all__ = ["AttackStage", "AutoAttack", "AutoAttackReport", "AutoAttackResult"]

VERSIONS = ("standard", "plus", "rand", "fast")
# members of each version, in run order (the original's ``_set_version``)
MEMBERS: dict[str, tuple[str, ...]] = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
    "fast": ("apgd-ce", "apgd-t", "square"),
}
RAND_EOT = 20  # gradient draws per APGD step in version "rand" (the original's eot_iter)
RAND_DRAWS = 5  # forward passes that judge a member's result in version "rand"


@dataclass(frozen=True)
class AttackStage:
    """What one member attack did: points attacked and fooled, robust accuracy after it."""

    name: str
    n_attacked: int  # points still robust when this attack started
    n_fooled: int  # of those, points this attack fooled
    robust_accuracy: float  # fraction of ALL points still robust after this attack
    seconds: float  # wall time of this attack (s)


@dataclass(frozen=True)
class AutoAttackReport:
    """Outcome of one ensemble run on a batch.

    Attributes:
        clean_accuracy: Fraction classified correctly before any attack.
        robust_accuracy: Fraction no member attack fooled.
        stages: One :class:`AttackStage` per member, in run order.
        robust: (B,) bool, per point: still classified correctly.
        fooled_by: (B,) long, index into ``stages`` of the attack that fooled the point, -1 for
            points still robust and -2 for points misclassified before any attack.
    """

    clean_accuracy: float
    robust_accuracy: float
    stages: tuple[AttackStage, ...]
    robust: Tensor
    fooled_by: Tensor

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly summary (no tensors)."""
        return {
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "stages": [asdict(s) for s in self.stages],
        }


@dataclass(frozen=True)
class AutoAttackResult(AttackResult):
    """An ensemble run (:meth:`AutoAttack.run`): the images and what each member did.

    Attributes:
        x_adv: Adversarial images, like the attack's call returns them.
        report: Accuracy and wall time after each member, per-point outcome.
    """

    report: AutoAttackReport


@register_attack("autoattack")
@dataclass
class AutoAttack(Attack):
    """AutoAttack (untargeted), linf, l2 or l1, in the original's versions.

    Args (dataclass fields):
        eps: Radius of the threat model.
        norm: ``"linf"``, ``"l2"`` or ``"l1"`` (see the module doc for L1's members).
        seed: Seed shared by the members' random starts and searches.
        version: ``"standard"``, ``"plus"`` or ``"rand"`` (the original's versions, see the
            module doc) or ``"fast"`` (25 steps, 3 targets, 500 queries: for CI, weaker).
        eot: Gradient samples per APGD step; version ``"rand"`` uses 20 unless this is set
            above 1.
        batch_size: Most points a member attacks at once (250, the reference's ``bs``);
            ``None``: all remaining points in one batch.

    :meth:`run` returns the images with an :class:`AutoAttackReport`.
    """

    name: ClassVar[str] = "autoattack"
    supports_targeted: ClassVar[bool] = False
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2", "l1")
    version: str = "standard"
    eot: int = 1
    batch_size: int | None = 250

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_float(self.eps, "eps")
        check_positive_int(self.eot, "eot")
        if self.batch_size is not None:
            check_positive_int(self.batch_size, "batch_size")
        if self.version not in VERSIONS:
            raise ValueError(
                f"unknown version {self.version!r}; choose one of: {', '.join(VERSIONS)}"
            )

    def members(self) -> list[Attack]:
        """The member attacks, in the order they run (the original's ``_set_version``)."""
        return [self.member(name) for name in MEMBERS[self.version]]

    def member(self, name: str) -> Attack:
        """Member ``name`` (one of ``MEMBERS[version]``) with this version's budgets.

        FAB and Square members are built with this ensemble's norm and raise their own one-line
        ``ValueError`` for a norm they lack; the APGD members can be built alone.
        """
        if name not in MEMBERS[self.version]:
            raise ValueError(f"version {self.version!r} has no member {name!r}; it has: "
                             f"{', '.join(MEMBERS[self.version])}")
        c: dict[str, Any] = {
            "eps": self.eps, "norm": self.norm, "seed": self.seed, "bounds": self.bounds,
        }
        v, l1 = self.version, self.norm == "l1"
        fast, eot = v == "fast", self.eot if self.eot > 1 or v != "rand" else RAND_EOT
        steps = 25 if fast else 100
        reps = l1 and v in ("standard", "fast")  # the large-radius schedule (L1 standard)
        if name == "apgd-ce":
            restarts = 5 if v == "plus" or (l1 and v == "standard") else 1
            return APGD(loss="ce", steps=steps, restarts=restarts, eot=eot,
                        use_largereps=reps, **c)
        if name == "apgd-dlr":
            return APGDDLR(restarts=5 if v == "plus" else 1, eot=eot, **c)
        if name == "apgd-t":
            targets = 3 if fast else 5 if l1 and v == "standard" else 9
            return APGDT(loss="dlr", steps=steps, n_target_classes=targets, eot=eot,
                         use_largereps=reps, **c)
        if name == "fab":
            return FAB(restarts=5, **c)
        if name == "fab-t":
            return FABT(n_target_classes=9, **c)
        if fast:
            return Square(queries=500, p_init=0.8, **c)
        # 5000 queries on the 10,000-query p schedule, not rescaled (resc_schedule=False), the
        # original's squares in L-inf (one window per query for the whole batch)
        return Square(queries=5000, p_init=0.8, rescale_schedule=False, reference_draws=True, **c)

    def run(self, model: Model, x: Tensor, y: Tensor) -> AutoAttackResult:
        """Attack like ``self(model, x, y)`` and report what each member did.

        Returns:
            An :class:`AutoAttackResult`: the adversarial images and the
            :class:`AutoAttackReport`.
        """
        return self._execute(model, x, y, None, self._ensemble)

    def _run(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        return self._ensemble(model, x, y, target, generator).x_adv

    def _ensemble(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        generator: torch.Generator,
    ) -> AutoAttackResult:
        """The members in turn, each on the points no earlier member fooled (core of
        :meth:`run`)."""
        with torch.no_grad():
            best = BestSoFar(x, is_success(model(x), y))  # misclassified points are done
        clean_acc = (~best.done).float().mean().item()
        fooled_by = torch.where(best.done, -2, -1).to(device=x.device, dtype=torch.long)  # (B,)
        stages: list[AttackStage] = []
        for k, attack in enumerate(self.members()):
            _sync(x)
            start = time.perf_counter()
            before = best.done.clone()
            draws = RAND_DRAWS if self.version == "rand" else 1
            run = _member_run(attack, model, x, y, generator, draws, self.seed)
            attack_remaining(best, run, chunk_size=self.batch_size)
            hit = best.done & ~before  # (B,) the points this member fooled
            fooled_by[hit] = k
            _sync(x)
            stages.append(AttackStage(
                name=attack.name,
                n_attacked=int((~before).sum()),
                n_fooled=int(hit.sum()),
                robust_accuracy=(~best.done).float().mean().item(),
                seconds=time.perf_counter() - start,
            ))
        report = AutoAttackReport(
            clean_accuracy=clean_acc,
            robust_accuracy=(~best.done).float().mean().item() if len(x) else 0.0,
            stages=tuple(stages),
            robust=(~best.done).cpu(),
            fooled_by=fooled_by.cpu(),
        )
        return AutoAttackResult(best.x, report)


def _member_run(
    attack: Attack, model: Model, x: Tensor, y: Tensor, generator: torch.Generator,
    draws: int = 1, seed: int | None = None,
) -> Callable[[Tensor], RunOutcome]:
    """``attack`` on given rows of the batch (each chunk from ``seed``, when one is set), judged
    by ``draws`` forward passes (no loss: a row is kept only where the member fooled the model
    on more than half of them)."""

    def run(idx: Tensor) -> RunOutcome:
        if seed is not None:
            generator.manual_seed(int(seed))
        xs, ys = take(x, idx), take(y, idx)
        adv = attack.run_prepared(model, xs, ys, None, generator)
        with torch.no_grad():
            wrong = torch.stack([is_success(model(adv), ys) for _ in range(draws)])  # (d, c)
        return adv, wrong.sum(dim=0) * 2 > draws, None

    return run


def _sync(x: Tensor) -> None:
    """Wait for queued GPU work so wall times are per attack."""
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
