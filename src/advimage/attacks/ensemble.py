"""AutoAttack-style ensemble: APGD-CE, APGD-T and Square, each on the points still robust.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020. No single attack is reliable (gradient masking fools PGD,
a weak step size fools everything), so AutoAttack runs complementary parameter-free attacks in
sequence and counts a point as robust only if all of them fail. Each attack is run only on the
points that every earlier attack failed on, so the weak points cost one attack and the expensive
later attacks see few points. The standard version is APGD-CE (100 steps, no restarts), APGD-T
(targeted DLR, 9 target classes, 100 steps) and Square (5000 queries); FAB-T of the original is
omitted (it rarely changes robust accuracy: see Table 2 of the paper).

Like the reference implementation (its ``bs``), each member attacks the remaining points in
chunks of at most ``batch_size``: memory stays bounded, and on a CPU larger batches are slower per
point (activations above glibc's 32 MiB mmap threshold are fresh pages on every pass: LeNet5
queries cost 2x per point at 900 points than at 256).

The result per point is the first successful adversarial example found, else the clean point;
:attr:`AutoAttack.last_report` (or :meth:`AutoAttack.run`) gives robust accuracy and wall time
after each attack.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from advimage.attacks.apgd import APGD
from advimage.attacks.apgd_targeted import APGDT
from advimage.attacks.base import Attack, Model, check_positive_float, check_positive_int
from advimage.attacks.losses import is_success
from advimage.attacks.registry import register_attack
from advimage.attacks.square import Square

__all__ = ["AttackStage", "AutoAttack", "AutoAttackReport"]

VERSIONS = ("standard", "fast")


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


@register_attack("autoattack")
@dataclass
class AutoAttack(Attack):
    """AutoAttack-style ensemble (untargeted), linf or l2.

    Args (dataclass fields):
        eps: Radius of the threat model.
        norm: ``"linf"`` or ``"l2"``.
        seed: Seed shared by the members' random starts and searches.
        version: ``"standard"`` (the paper's budgets: 100 steps, 9 targets, 5000 queries) or
            ``"fast"`` (25 steps, 3 targets, 500 queries: for CI and quick looks, weaker).
        eot: Gradient samples per APGD step (``EOT(AutoAttack(...), n)`` for randomized
            models; the paper's "rand" version uses 20).
        batch_size: Most points a member attacks at once (the reference's ``bs`` is 250);
            ``None``: all remaining points in one batch.

    After a call, :attr:`last_report` holds an :class:`AutoAttackReport`.
    """

    name: ClassVar[str] = "autoattack"
    supports_targeted: ClassVar[bool] = False
    version: str = "standard"
    eot: int = 1
    batch_size: int | None = 256
    last_report: AutoAttackReport | None = field(
        default=None, init=False, repr=False, compare=False
    )

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
        """The member attacks, in the order they run."""
        common = {"eps": self.eps, "norm": self.norm, "seed": self.seed, "bounds": self.bounds}
        if self.version == "standard":
            steps, targets, queries = 100, 9, 5000  # the paper's budgets
        else:
            steps, targets, queries = 25, 3, 500
        attacks: list[Attack] = [
            APGD(loss="ce", steps=steps, restarts=1, eot=self.eot, **common),
            APGDT(loss="dlr", steps=steps, n_target_classes=targets, restarts=1, eot=self.eot,
                  **common),
        ]
        attacks.append(Square(queries=queries, p_init=0.8, restarts=1, **common))
        return attacks

    def run(self, model: Model, x: Tensor, y: Tensor) -> tuple[Tensor, AutoAttackReport]:
        """Attack and return ``(x_adv, report)``."""
        x_adv = self(model, x, y)
        report = self.last_report
        if report is None:  # pragma: no cover -- _run always sets it
            raise RuntimeError("AutoAttack finished without a report")
        return x_adv, report

    def _run(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        n = x.shape[0]
        with torch.no_grad():
            robust = ~is_success(model(x), y)  # (B,) correctly classified
        clean_acc = robust.float().mean().item()
        fooled_by = torch.where(robust, -1, -2).to(device=x.device, dtype=torch.long)  # (B,)
        out = x.clone()  # (B, C, H, W)
        stages: list[AttackStage] = []
        for k, attack in enumerate(self.members()):
            _sync(x)
            start = time.perf_counter()
            todo = robust.nonzero().flatten()  # (m,)
            n_fooled = 0
            size = self.batch_size or todo.numel()
            for chunk in todo.split(size) if todo.numel() else ():  # (c,) each; none when done
                xs, ys = x.index_select(0, chunk), y.index_select(0, chunk)
                adv = attack.threat.project(xs, attack._run(model, xs, ys, None, generator))
                with torch.no_grad():
                    fooled = is_success(model(adv), ys)  # (c,)
                hit = chunk[fooled]
                out.index_copy_(0, hit, adv[fooled])
                robust.index_fill_(0, hit, False)
                fooled_by.index_fill_(0, hit, k)
                n_fooled += int(fooled.sum())
            _sync(x)
            stages.append(AttackStage(
                name=attack.name,
                n_attacked=int(todo.numel()),
                n_fooled=n_fooled,
                robust_accuracy=robust.float().mean().item(),
                seconds=time.perf_counter() - start,
            ))
        self.last_report = AutoAttackReport(
            clean_accuracy=clean_acc,
            robust_accuracy=robust.float().mean().item() if n else 0.0,
            stages=tuple(stages),
            robust=robust.cpu(),
            fooled_by=fooled_by.cpu(),
        )
        return out


def _sync(x: Tensor) -> None:
    """Wait for queued GPU work so wall times are per attack."""
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
