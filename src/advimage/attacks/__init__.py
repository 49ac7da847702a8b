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
from advimage.attacks.hsj import HopSkipJump, HopSkipJumpResult
from advimage.attacks.loop import IterativeAttack, input_gradient
from advimage.attacks.losses import ce_loss, dlr_loss, margin_loss
from advimage.attacks.pgd import PGD
from advimage.attacks.registry import (
    attack_class,
    create_attack,
    list_attacks,
    register_attack,
)
from advimage.attacks.result_attack import ResultAttack
from advimage.attacks.square import Square, SquareResult
from advimage.attacks.transfer import DiverseInputs, SurrogateEnsemble

__all__ = [
    "APGD",
    "APGDT",
    "BPDA",
    "EOT",
    "FAB",
    "FABT",
    "FABResult",
    "FGSM",
    "HopSkipJump",
    "HopSkipJumpResult",
    "PGD",
    "Attack",
    "AttackResult",
    "ResultAttack",
    "AutoAttack",
    "AutoAttackReport",
    "AutoAttackResult",
    "CarliniWagnerL2",
    "DiverseInputs",
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
    "SurrogateEnsemble",
]

# minimal-norm and sparse attacks (issue 18, items 2 and 3)
from advimage.attacks.fmn import FMN  # noqa: E402
from advimage.attacks.minimal_norm import MinimalNormAttack, MinimalNormResult  # noqa: E402

__all__ += ["FMN", "MinimalNormAttack", "MinimalNormResult"]
from advimage.attacks.ddn import DDN  # noqa: E402
from advimage.attacks.deepfool import DeepFool  # noqa: E402

__all__ += ["DDN", "DeepFool"]
