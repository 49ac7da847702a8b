"""Adversarial attacks: config dataclasses called as ``attack(model, x, y, target=None)``.

Build one by name with :func:`create_attack` (``list_attacks()`` shows the names) or
directly, e.g. ``PGD(eps=8/255, norm="linf", steps=10)``. Importing this package registers
every attack.
"""

from advimage.attacks.apgd import APGD
from advimage.attacks.apgd_targeted import APGDT
from advimage.attacks.base import Attack, AttackResult, frozen
from advimage.attacks.bpda import BPDA
from advimage.attacks.cw import CarliniWagnerL2
from advimage.attacks.ensemble import AutoAttack, AutoAttackReport, AutoAttackResult
from advimage.attacks.eot import EOT
from advimage.attacks.fab import FAB, FABT, FABResult
from advimage.attacks.fgsm import FGSM
from advimage.attacks.loop import IterativeAttack, input_gradient
from advimage.attacks.losses import ce_loss, dlr_loss, margin_loss
from advimage.attacks.pgd import PGD
from advimage.attacks.registry import (
    attack_class,
    create_attack,
    list_attacks,
    register_attack,
)
from advimage.attacks.square import Square, SquareResult

__all__ = [
    "APGD",
    "APGDT",
    "BPDA",
    "EOT",
    "FAB",
    "FABT",
    "FABResult",
    "FGSM",
    "PGD",
    "Attack",
    "AttackResult",
    "AutoAttack",
    "AutoAttackReport",
    "AutoAttackResult",
    "CarliniWagnerL2",
    "IterativeAttack",
    "attack_class",
    "ce_loss",
    "create_attack",
    "dlr_loss",
    "frozen",
    "input_gradient",
    "list_attacks",
    "margin_loss",
    "register_attack",
    "Square",
    "SquareResult",
]
