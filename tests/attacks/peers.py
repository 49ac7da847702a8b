"""Adapters that run the peer libraries' attacks on exactly the inputs we give our own.

Used by the differential tests (``test_differential.py``) and by the scripts in ``bench/``
(which put this folder on ``sys.path``). Each adapter takes the *same* model object our attacks
get (an :class:`advimage.models.ImageClassifier` normalizes inside, so no peer is told about
normalization), images ``x`` ``(B, C, H, W)`` in [0, 1] and labels ``y`` ``(B,)``, and returns
the peer's adversarial images as a CPU float tensor of the same shape. Peers are imported
lazily, so importing this module never needs them.

Peers: torchattacks 3.5 (Kim, 2020), Foolbox 3 (Rauber et al., 2017/2020) and the Adversarial
Robustness Toolbox 1.x (Nicolae et al., 2018).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "aa_autoattack",
    "art_classifier",
    "art_fgsm",
    "art_hsj",
    "art_pgd",
    "fb_cw",
    "fb_fgsm",
    "fb_hsj",
    "fb_model",
    "fb_pgd",
    "ta_apgd",
    "ta_autoattack",
    "ta_cw",
    "ta_fgsm",
    "ta_pgd",
    "ta_square",
    "robust_mask",
    "QueryCounter",
]
__all__ += ["fb_ddn", "fb_deepfool", "fb_fmn", "pa_apgd", "ta_deepfool"]


@torch.no_grad()
def robust_mask(model: nn.Module, x_adv: Tensor, y: Tensor, batch_size: int = 500) -> Tensor:
    """Boolean ``(B,)``: ``model`` still classifies ``x_adv`` as ``y`` (one evaluation for all)."""
    preds = [model(chunk).argmax(1) for chunk in x_adv.split(batch_size)]
    return torch.cat(preds) == y


# --------------------------------------------------------------------------- torchattacks
def _ta_check(attack: Any) -> Any:
    """The model must get raw [0, 1] pixels: torchattacks must not normalize on its own."""
    if attack._normalization_applied:  # only set by set_normalization_used / RobModel
        raise RuntimeError("torchattacks would normalize inputs a second time")
    return attack


def ta_fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
    import torchattacks

    return _ta_check(torchattacks.FGSM(model, eps=eps))(x, y).detach()


def ta_pgd(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int,
    random_start: bool = False,
) -> Tensor:
    import torchattacks

    atk = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start)
    return _ta_check(atk)(x, y).detach()


def ta_cw(
    model: nn.Module, x: Tensor, y: Tensor, c: float, steps: int, lr: float, kappa: float = 0.0
) -> Tensor:
    """torchattacks' CW-L2: one fixed constant ``c``, no binary search (its docs say so)."""
    import torchattacks

    atk = torchattacks.CW(model, c=c, kappa=kappa, steps=steps, lr=lr)
    return _ta_check(atk)(x, y).detach()


def ta_apgd(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int, loss: str = "ce",
    seed: int = 0, norm: str = "Linf",
) -> Tensor:
    import torchattacks

    atk = torchattacks.APGD(
        model, norm=norm, eps=eps, steps=steps, n_restarts=1, seed=seed, loss=loss, rho=0.75
    )
    return _ta_check(atk)(x, y).detach()


def ta_square(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, queries: int, seed: int = 0
) -> Tensor:
    import torchattacks

    atk = torchattacks.Square(
        model, norm="Linf", eps=eps, n_queries=queries, n_restarts=1, p_init=0.8,
        loss="margin", resc_schedule=True, seed=seed,
    )
    return _ta_check(atk)(x, y).detach()


def ta_autoattack(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, seed: int = 0, version: str = "standard"
) -> Tensor:
    import torchattacks

    atk = torchattacks.AutoAttack(
        model, norm="Linf", eps=eps, version=version, n_classes=10, seed=seed
    )
    return _ta_check(atk)(x, y).detach()


# --------------------------------------------------------------------------- Foolbox
def fb_model(model: nn.Module) -> Any:
    """Foolbox wrapper of ``model`` with bounds (0, 1) and no preprocessing."""
    import foolbox

    return foolbox.PyTorchModel(model.eval(), bounds=(0.0, 1.0))


def fb_fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
    import foolbox

    raw, _, _ = foolbox.attacks.LinfFastGradientAttack(random_start=False)(
        fb_model(model), x, y, epsilons=eps
    )
    return raw.detach()


def fb_pgd(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int,
    random_start: bool = False,
) -> Tensor:
    import foolbox

    atk = foolbox.attacks.LinfPGD(abs_stepsize=alpha, steps=steps, random_start=random_start)
    raw, _, _ = atk(fb_model(model), x, y, epsilons=eps)
    return raw.detach()


def fb_cw(
    model: nn.Module, x: Tensor, y: Tensor, steps: int, binary_steps: int,
    initial_const: float, lr: float, kappa: float = 0.0,
) -> Tensor:
    """Foolbox's CW-L2 with its binary search over c; ``abort_early`` off (fixed work)."""
    import foolbox

    atk = foolbox.attacks.L2CarliniWagnerAttack(
        binary_search_steps=binary_steps, steps=steps, stepsize=lr, confidence=kappa,
        initial_const=initial_const, abort_early=False,
    )
    raw, _, _ = atk(fb_model(model), x, y, epsilons=math.inf)
    return raw.detach()


# --------------------------------------------------------------------------- ART
def art_classifier(model: nn.Module, x: Tensor, num_classes: int = 10) -> Any:
    """ART PyTorch classifier around ``model``: clip values (0, 1), no preprocessing."""
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=model.eval(), loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
        nb_classes=num_classes, clip_values=(0.0, 1.0), device_type="cpu",
    )


def art_fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
    from art.attacks.evasion import FastGradientMethod

    atk = FastGradientMethod(
        art_classifier(model, x), norm=np.inf, eps=eps, eps_step=eps, batch_size=len(x)
    )
    return torch.from_numpy(atk.generate(x=x.numpy(), y=y.numpy()))


def art_pgd(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int,
    random_start: bool = False,
) -> Tensor:
    from art.attacks.evasion import ProjectedGradientDescent

    atk = ProjectedGradientDescent(
        art_classifier(model, x), norm=np.inf, eps=eps, eps_step=alpha, max_iter=steps,
        num_random_init=int(random_start), batch_size=len(x), verbose=False,
    )
    return torch.from_numpy(atk.generate(x=x.numpy(), y=y.numpy()))


# --------------------------------------------------------------------------- issue 18: sparse and
# minimal-norm peers (Foolbox's FMN and DDN, torchattacks' and Foolbox's DeepFool, the original
# AutoAttack's l1-APGD from ``pyautoattack``)
def fb_fmn(model: nn.Module, x: Tensor, y: Tensor, norm: str, steps: int = 100) -> Tensor:
    """Foolbox 3.3's FMN for ``norm`` in linf, l2, l1, l0 (paper defaults otherwise)."""
    import foolbox

    cls = {
        "linf": foolbox.attacks.LInfFMNAttack, "l2": foolbox.attacks.L2FMNAttack,
        "l1": foolbox.attacks.L1FMNAttack, "l0": foolbox.attacks.L0FMNAttack,
    }[norm]
    raw, _, _ = cls(steps=steps)(fb_model(model), x, y, epsilons=None)
    return raw.detach()


def fb_ddn(model: nn.Module, x: Tensor, y: Tensor, steps: int = 100) -> Tensor:
    import foolbox

    raw, _, _ = foolbox.attacks.DDNAttack(steps=steps)(fb_model(model), x, y, epsilons=None)
    return raw.detach()


def fb_deepfool(model: nn.Module, x: Tensor, y: Tensor, norm: str, steps: int = 50) -> Tensor:
    import foolbox

    cls = foolbox.attacks.L2DeepFoolAttack if norm == "l2" else foolbox.attacks.LinfDeepFoolAttack
    raw, _, _ = cls(steps=steps)(fb_model(model), x, y, epsilons=None)
    return raw.detach()


def ta_deepfool(model: nn.Module, x: Tensor, y: Tensor, steps: int = 50) -> Tensor:
    """torchattacks' DeepFool (L2 only, all classes, overshoot 0.02)."""
    import torchattacks

    return _ta_check(torchattacks.DeepFool(model, steps=steps, overshoot=0.02))(x, y).detach()


def pa_apgd(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int, norm: str = "L1",
    loss: str = "ce", seed: int = 0,
) -> Tensor:
    """The original AutoAttack's APGD (``pyautoattack``), one restart, no eps schedule."""
    from pyautoattack.autopgd_base import APGDAttack

    atk = APGDAttack(model, n_iter=steps, norm=norm, n_restarts=1, eps=eps, seed=seed,
                     loss=loss, device=x.device)
    return atk.perturb(x.clone(), y.clone()).detach()
# --------------------------------------------------------------------------- decision-based
class QueryCounter(nn.Module):
    """``model`` that counts the images it is asked about (``rows``), for equal-query runs.

    Inputs are cast to float32 (ART's HopSkipJump blends in float64 during its start)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rows = 0

    def forward(self, x: Tensor) -> Tensor:
        self.rows += len(x)
        return self.model(x.float())


def fb_hsj(
    model: nn.Module, x: Tensor, y: Tensor, steps: int, norm: str = "l2",
    init_evals: int = 100,
) -> tuple[Tensor, float]:
    """Foolbox's HopSkipJump (its default blended-noise start); returns the images and the
    mean number of model evaluations per sample it spent."""
    import foolbox

    counter = QueryCounter(model)
    atk = foolbox.attacks.HopSkipJumpAttack(
        steps=steps, initial_gradient_eval_steps=init_evals, constraint=norm
    )
    raw, _, _ = atk(fb_model(counter), x, y, epsilons=None)
    return raw.detach(), counter.rows / len(x)


def art_hsj(
    model: nn.Module, x: Tensor, y: Tensor, steps: int, norm: str = "l2",
    init_evals: int = 100,
) -> tuple[Tensor, float]:
    """ART's HopSkipJump (its noise start, per-sample loop); images and mean queries."""
    from art.attacks.evasion import HopSkipJump

    counter = QueryCounter(model)
    atk = HopSkipJump(
        art_classifier(counter, x), norm=2 if norm == "l2" else np.inf, max_iter=steps,
        init_eval=init_evals, batch_size=len(x), verbose=False,
    )
    out = torch.from_numpy(atk.generate(x=x.numpy(), y=y.numpy()))
    return out, counter.rows / len(x)
# --------------------------------------------------------------------------- pyautoattack
def aa_autoattack(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, seed: int = 0, version: str = "standard",
    norm: str = "linf", batch_size: int = 250,
) -> Tensor:
    """The original AutoAttack (Croce & Hein's code, ``pyautoattack``), its own ensemble loop."""
    from pyautoattack import AutoAttack as OriginalAutoAttack

    aa = OriginalAutoAttack(model, eps=eps, norm={"linf": "Linf", "l2": "L2", "l1": "L1"}[norm],
                            seed=seed, version=version, device=x.device)
    x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=batch_size)
    return x_adv.detach()
