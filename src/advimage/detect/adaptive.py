"""Attacks on the noise-signature detector: the paper's gray/white-box attacks and an adaptive one.

Hu, Yu et al. (NeurIPS 2019), "A New Defense Against Adversarial Images: Turning a Weakness
into a Strength", Section 5 and the official ``attack.py`` (s-huu/TurningWeaknessIntoStrength):

* :class:`HuAttack` ``setting="gray"``: a targeted L-inf attack towards a random class, Adam
  on the image (official ``lr=0.03``, 50 steps), either ``objective="pgd"`` (cross-entropy to
  the clean softmax with the label's and the target's probabilities swapped) or
  ``objective="cw"`` (hinge ``max_{j!=t} z_j - z_t + 20``); it ignores the detector;
* :class:`HuAttack` ``setting="white"``: the paper's white-box attack, the same objective
  weighted by ``lbd=2`` plus one term per criterion -- C1's softmax L1 change under one noise
  draw, and straight-through one-step surrogates of C2t (descend) and C2u (ascend), see
  :mod:`advimage.detect.surrogates`;
* :class:`AdaptiveAttack` (ours): a stronger adaptive attack in the spirit of Bryniarski et
  al. (2022), "Evading Adversarial Example Detection Defenses with Orthogonal Projected
  Gradient Descent". The detector terms are hinged at the calibrated thresholds (the attacker
  knows them), C1 uses EOT over fresh noise draws, the unknown C2t target is averaged over
  steps by drawing a fresh one each step, and the update alternates orthogonally: a sample not
  yet misclassified steps along the classifier gradient with its component along the detector
  gradient removed, and a misclassified one along the detector gradient with its component
  along the classifier gradient removed. The iterate kept per sample is the last one that was
  misclassified with the lowest detector surrogate ("run to convergence": many steps, best kept).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from advimage.attacks.adam import AdamState, adam_step
from advimage.attacks.base import Attack, Model, check_positive_float, check_positive_int
from advimage.attacks.losses import margin_loss
from advimage.detect.config import DetectorConfig
from advimage.detect.criteria import random_targets, softmax_l1_change
from advimage.detect.surrogates import c2t_surrogate_loss, one_step_attack
from advimage.threat import orthogonal_part

__all__ = ["AdaptiveAttack", "HuAttack"]

def _hinge_to(logits: Tensor, target: Tensor, margin: float) -> Tensor:
    """``max(max_{j!=t} z_j - z_t + margin, 0)`` per sample ``(B,)`` (official CW loss)."""
    return (-margin_loss(logits, target, target) + margin).clamp(min=0)


def _swap_probs(probs: Tensor, label: Tensor, target: Tensor) -> Tensor:
    """``probs`` with columns ``label`` and ``target`` swapped per row (``target_distribution``)."""
    out = probs.clone()  # (B, K)
    rows = torch.arange(len(probs), device=probs.device)
    out[rows, label] = probs[rows, target]
    out[rows, target] = probs[rows, label]
    return out


@dataclass
class HuAttack(Attack):
    """The official gray-box / white-box attack of Hu, Yu et al. (2019), batched.

    Args:
        eps: L-inf radius tau, pixel units (paper: 0.03 and 0.1).
        objective: ``"pgd"`` (soft-label cross-entropy) or ``"cw"`` (hinge, ``margin``).
        setting: ``"gray"`` (ignores the detector) or ``"white"`` (adds the detector terms).
        steps: Adam steps (official ``allstep`` default 50).
        lr: Adam learning rate, pixel units (official 0.03).
        margin: CW hinge margin, logit units (official 20).
        lbd: Weight of the classification term in the white-box loss (official 2).
        detector: Detector hyperparameters the white-box surrogates use (CIFAR-10 preset).
    """

    name: ClassVar[str] = "hu"

    eps: float = 0.03
    objective: str = "pgd"
    setting: str = "gray"
    steps: int = 50
    lr: float = 0.03
    margin: float = 20.0
    lbd: float = 2.0
    detector: DetectorConfig = field(default_factory=DetectorConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.norm != "linf":
            raise ValueError("the paper's attacks are L-inf: norm must"
                             f" be 'linf', got {self.norm!r}")
        if self.objective not in ("pgd", "cw"):
            raise ValueError(f"objective must be 'pgd' or 'cw', got {self.objective!r}")
        if self.setting not in ("gray", "white"):
            raise ValueError(f"setting must be 'gray' or 'white', got {self.setting!r}")
        check_positive_int(self.steps, "steps")
        check_positive_float(self.lr, "lr")
        check_positive_float(self.margin, "margin")
        check_positive_float(self.lbd, "lbd")

    def _loss(self, model: Model, xv: Tensor, st: dict[str, Tensor],
              gen: torch.Generator) -> Tensor:
        """Per-sample loss ``(B,)`` to minimise at ``xv``."""
        logits = model(xv)  # (B, K)
        t = st["target"]
        if self.objective == "pgd":
            loss1 = -(st["dist"] * F.log_softmax(logits, dim=1)).sum(dim=1)
        else:
            loss1 = _hinge_to(logits, t, self.margin)
        if self.setting == "gray":
            return loss1
        cfg = self.detector
        noise = cfg.sigma * torch.randn(xv.shape, generator=gen, dtype=xv.dtype, device=xv.device)
        loss2 = softmax_l1_change(model, xv, noise, F.softmax(logits, dim=1))
        new_t = random_targets(t, logits.shape[1], gen)  # another class than the target
        if self.objective == "pgd":
            loss3 = c2t_surrogate_loss(model, xv, new_t, lr=cfg.c2t_lr, radius=cfg.c2t_radius,
                                       bounds=self.bounds)
        else:
            x_t = one_step_attack(model, xv, new_t, lr=cfg.c2t_lr, radius=cfg.c2t_radius,
                                  target=new_t, bounds=self.bounds)
            loss3 = _hinge_to(model(x_t), new_t, self.margin)
        pred = logits.detach().argmax(dim=1)  # (B,) the official L4 uses the current label
        x_u = one_step_attack(model, xv, pred, lr=cfg.c2u_lr, radius=cfg.c2u_radius,
                              bounds=self.bounds)
        out_u = model(x_u)  # (B, K)
        if self.objective == "pgd":
            loss4 = F.cross_entropy(out_u, t, reduction="none")
        else:
            # official: the runner-up class (the top one if the runner-up is the target)
            top2 = out_u.detach().topk(2, dim=1).indices  # (B, 2)
            other = torch.where(top2[:, 1] == t, top2[:, 0], top2[:, 1])
            rows = torch.arange(len(t), device=t.device)
            loss4 = (out_u[rows, other] - out_u[rows, t] + self.margin).clamp(min=0)
        return self.lbd * loss1 + loss2 + loss3 - loss4

    def _run(self, model: Model, x: Tensor, y: Tensor, target: Tensor | None,
             generator: torch.Generator) -> Tensor:
        with torch.no_grad():
            logits = model(x)  # (B, K)
        label = logits.argmax(dim=1)  # official: the model's prediction
        if target is None:
            target = random_targets(label, logits.shape[1], generator)
        st = {"target": target, "dist": _swap_probs(F.softmax(logits, dim=1), label, target)}
        w = x.clone()  # (B, C, H, W)
        adam = AdamState.zeros_like(x)
        threat = self.threat
        for _ in range(self.steps):
            xv = w.detach().requires_grad_(True)
            with torch.enable_grad():
                loss = self._loss(model, xv, st, generator)
            (g,) = torch.autograd.grad(loss.sum(), xv)
            w, adam = adam_step(w, g, adam, self.lr)
            w = threat.project_box_first(x, w)  # the official order: box, then ball
        return w.detach()


@dataclass
class AdaptiveAttack(Attack):
    """Adaptive white-box attack on both criteria with orthogonal projected gradients.

    Untargeted: success is any misclassification with logit margin ``kappa``. The detector loss
    is ``relu(C1_eot / t1 - rho) + relu(c2t_sur / t2 - rho)``-style: each criterion surrogate
    divided by its scale and hinged so that a sample already well below a threshold stops
    spending effort on it (``rho`` = fraction of the threshold aimed at).

    Args:
        eps: L-inf radius, pixel units.
        steps: Sign-gradient steps (the attack keeps the best iterate, so more is never worse).
        step_size: Step length, pixel units; ``None`` = ``eps / 8``, cosine-decayed.
        kappa: Logit margin of success, logit units.
        eot: Noise draws averaged for C1 per step.
        c1_threshold: Calibrated C1 threshold (scale of the C1 term); ``None`` = 1.
        c2t_scale: Scale of the C2t surrogate (cross-entropy units).
        rho: Fraction of the C1 threshold the attack aims below (hinge point).
        detector: Detector hyperparameters (sigma, C2t step) the surrogates use.
    """

    name: ClassVar[str] = "adaptive"
    supports_targeted: ClassVar[bool] = False

    eps: float = 8 / 255
    steps: int = 100
    step_size: float | None = None
    kappa: float = 2.0
    eot: int = 2
    c1_threshold: float | None = None
    c2t_scale: float = 1.0
    rho: float = 0.5
    detector: DetectorConfig = field(default_factory=DetectorConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.norm != "linf":
            raise ValueError(f"adaptive attack is L-inf: norm must be 'linf', got {self.norm!r}")
        check_positive_int(self.steps, "steps")
        check_positive_int(self.eot, "eot")
        check_positive_float(self.c2t_scale, "c2t_scale")
        check_positive_float(self.rho, "rho")
        if self.step_size is not None:
            check_positive_float(self.step_size, "step_size")
        if self.c1_threshold is not None:
            check_positive_float(self.c1_threshold, "c1_threshold")
        if not (isinstance(self.kappa, (int, float)) and self.kappa >= 0):
            raise ValueError(f"kappa must be a number >= 0, got {self.kappa!r}")

    def detector_loss(self, model: Model, xv: Tensor, logits: Tensor,
                      gen: torch.Generator) -> Tensor:
        """Per-sample hinged detector surrogate ``(B,)`` (differentiable in ``xv``)."""
        cfg = self.detector
        noise = cfg.sigma * torch.randn((self.eot, *xv.shape), generator=gen, dtype=xv.dtype,
                                        device=xv.device)  # (eot, B, C, H, W)
        c1 = softmax_l1_change(model, xv, noise, F.softmax(logits, dim=1))  # (B,)
        t1 = self.c1_threshold or 1.0
        new_t = random_targets(logits.detach().argmax(dim=1), logits.shape[1], gen)
        c2 = c2t_surrogate_loss(model, xv, new_t, lr=cfg.c2t_lr, radius=cfg.c2t_radius,
                                bounds=self.bounds)  # (B,)
        return (c1 / t1 - self.rho).clamp(min=0) + c2 / self.c2t_scale

    def _run(self, model: Model, x: Tensor, y: Tensor, target: Tensor | None,
             generator: torch.Generator) -> Tensor:
        base = self.step_size if self.step_size is not None else self.eps / 8
        best = x.clone()  # (B, C, H, W)
        best_val = torch.full((len(x),), math.inf, dtype=x.dtype, device=x.device)
        w = x.clone()
        threat = self.threat
        for i in range(self.steps):
            xv = w.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = model(xv)  # (B, K)
                # classification: margin of the true class over the best other, + kappa
                cls = (-margin_loss(logits, y) + self.kappa).clamp(min=0)  # (B,) minimise
                det = self.detector_loss(model, xv, logits, generator)  # (B,) minimise
            g_cls = torch.autograd.grad(cls.sum(), xv, retain_graph=True)[0]
            g_det = torch.autograd.grad(det.sum(), xv)[0]
            fooled = (margin_loss(logits.detach(), y) > 0)  # (B,)
            # keep the misclassified iterate with the lowest detector surrogate so far
            val = det.detach()
            better = fooled & (val < best_val)
            best = torch.where(better.view(-1, 1, 1, 1), w, best)
            best_val = torch.where(better, val, best_val)
            confident = cls.detach() <= 0  # margin kappa reached: work on the detector
            direction = torch.where(
                confident.view(-1, 1, 1, 1), orthogonal_part(g_det, g_cls),
                orthogonal_part(g_cls, g_det),
            )
            alpha = base * 0.5 * (1 + math.cos(math.pi * i / self.steps))  # cosine decay
            w = threat.project(x, w - alpha * direction.sign()).detach()
        # samples never misclassified keep the last iterate (they count as failures anyway)
        never = torch.isinf(best_val)
        return torch.where(never.view(-1, 1, 1, 1), w, best)
