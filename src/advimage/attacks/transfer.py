"""Transfer-attack options of the shared iterative loop, and an ensemble of surrogate models.

Adversarial examples crafted on a surrogate model often fool another model (black-box transfer).
Three tricks raise that rate, each an option of :class:`advimage.attacks.loop.IterativeAttack`
(so of ``pgd`` and ``fgsm``), freely combined:

* **Momentum** (MI-FGSM; Dong et al., "Boosting Adversarial Attacks with Momentum", CVPR 2018):
  ``g <- mu * g + grad / ||grad||_1`` and the step follows ``g`` (its sign for linf). The
  per-sample L1 norm is taken as the mean absolute value, as torchattacks does: a constant
  factor (the input size) that changes neither the sign nor the L2 direction.
* **Input diversity** (DI; Xie et al., "Improving Transferability of Adversarial Examples with
  Input Diversity", CVPR 2019): with probability ``p`` the gradient pass sees the batch resized
  to a random side and padded at a random offset (one draw per pass for the whole batch, as the
  authors' code). The paper enlarges 299 px images to [299, 330) and pads to 330, which needs a
  model taking any input size; advimage's default ``resize=0.9`` shrinks to [0.9 H, H) and pads
  back to H (torchattacks' ``DIFGSM``), so fixed-size models work. ``resize > 1`` is the
  paper's enlarging variant.
* **Translation invariance** (TI; Dong et al., "Evading Defenses to Transferable Adversarial
  Examples by Translation-Invariant Attacks", CVPR 2019): the gradient is convolved, channel by
  channel, with a Gaussian kernel of side ``k`` spanning +-``nsig`` standard deviations (the
  paper's 15 and 3 on 299 px ImageNet images) before the momentum and the step.

:class:`SurrogateEnsemble` averages the logits of several surrogates (the logit ensemble of
Dong et al., 2018, Section 3.2), usable as the model of any attack.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from advimage.attacks.preparation import Model
from advimage.model_flags import DeclaresFlags, model_flags

__all__ = [
    "DiverseInputs",
    "SurrogateEnsemble",
    "check_transfer_options",
    "gaussian_kernel",
    "momentum_update",
    "smooth",
]


def momentum_update(grad: Tensor, momentum: Tensor, mu: float) -> Tensor:
    """MI-FGSM's accumulated gradient ``mu * momentum + grad / mean|grad|`` (per sample)."""
    scale = grad.abs().flatten(1).mean(dim=1).clamp_min(1e-12)  # (B,)
    return mu * momentum + grad / scale.view(-1, *([1] * (grad.dim() - 1)))


def gaussian_kernel(size: int, nsig: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """TI's normalised 2-D Gaussian ``(size, size)``: the outer product of the standard normal
    density at ``size`` points evenly spaced over [-nsig, nsig] (the authors' ``gkern``)."""
    t = torch.linspace(-nsig, nsig, size, dtype=torch.float64)
    pdf = torch.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)
    k = torch.outer(pdf, pdf)
    return (k / k.sum()).to(dtype=dtype, device=device)


def smooth(grad: Tensor, size: int, nsig: float) -> Tensor:
    """``grad`` ``(B, C, H, W)`` convolved per channel with :func:`gaussian_kernel`, zero
    padding, same size (TI's ``W * grad``)."""
    c = grad.shape[1]
    k = gaussian_kernel(size, nsig, grad.dtype, grad.device).expand(c, 1, size, size)
    return F.conv2d(grad, k, padding="same", groups=c)


class DiverseInputs(nn.Module, DeclaresFlags):
    """``model`` seen through DI's random resize-and-pad (Xie et al., 2019).

    Declares itself randomized (EOT and the fast forward must not treat it as fixed); its
    other flags are ``model``'s, read at each call (:func:`advimage.model_flags.model_flags`).

    Args:
        model: The surrogate.
        prob: Probability that a forward pass transforms its batch.
        resize: Ratio of the resize range: below 1, sides in ``[int(resize * H), H)`` padded
            back to ``H``; above 1, sides in ``[H, int(resize * H))`` padded to
            ``int(resize * H)``.
        generator: Source of the draws (the attack's seeded generator).
    """

    is_randomized = True

    def __init__(self, model: Model, prob: float, resize: float, generator: torch.Generator):
        super().__init__()
        self.inner, self.prob, self.resize, self.generator = model, prob, resize, generator

    @property
    def is_differentiable(self) -> bool:
        """As the wrapped model (resizing and padding pass gradients)."""
        return model_flags(self.inner).is_differentiable

    @property
    def uses_bpda(self) -> bool:
        """As the wrapped model."""
        return model_flags(self.inner).uses_bpda

    def _draw(self, high: int) -> int:
        """An integer in ``[0, high)`` from the attack's generator (0 when the range is empty)."""
        if high <= 0:
            return 0
        return int(torch.randint(0, high, (1,), generator=self.generator,
                                 device=self.generator.device))

    def forward(self, x: Tensor) -> Tensor:
        side = x.shape[-1]
        small, big = sorted((int(side * self.resize), side))
        rnd = small + self._draw(big - small)  # torchattacks' randint(low=small, high=big)
        rem = big - rnd
        top, left = self._draw(rem), self._draw(rem)
        u = torch.rand((1,), generator=self.generator, device=self.generator.device)
        if float(u) >= self.prob:
            return self.inner(x)
        z = F.interpolate(x, size=[rnd, rnd], mode="bilinear", align_corners=False)
        return self.inner(F.pad(z, [left, rem - left, top, rem - top], value=0.0))


class SurrogateEnsemble(nn.Module):
    """The mean of several models' logits (Dong et al., 2018's logit ensemble), optionally
    weighted; attack it like one model to craft examples that transfer.

    Args:
        models: The surrogates; they must agree on the number of classes.
        weights: Non-negative weights, one per model (``None``: equal); normalised to sum 1.
    """

    def __init__(self, models: Sequence[nn.Module], weights: Sequence[float] | None = None):
        super().__init__()
        if len(models) == 0:
            raise ValueError("SurrogateEnsemble needs at least one model")
        w = [1.0] * len(models) if weights is None else [float(v) for v in weights]
        if len(w) != len(models) or any(v < 0 or not math.isfinite(v) for v in w) or sum(w) <= 0:
            raise ValueError(f"weights must be {len(models)} finite numbers >= 0, not all 0")
        self.members = nn.ModuleList(models)
        self.weights = [v / sum(w) for v in w]

    def forward(self, x: Tensor) -> Tensor:
        out = [w * m(x) for m, w in zip(self.members, self.weights, strict=True)]
        if len({o.shape for o in out}) != 1:
            raise ValueError("surrogates disagree on the logits' shape: "
                             + ", ".join(str(tuple(o.shape)) for o in out))
        return torch.stack(out).sum(dim=0)


def check_transfer_options(
    momentum: float, diversity_prob: float, diversity_resize: float, ti_kernel: int,
    ti_nsig: float,
) -> None:
    """``ValueError`` in one line for an out-of-range transfer option of the loop."""
    if not (isinstance(momentum, (int, float)) and 0.0 <= momentum < math.inf):
        raise ValueError(f"momentum must be a finite number >= 0, got {momentum!r}")
    if not (isinstance(diversity_prob, (int, float)) and 0.0 <= diversity_prob <= 1.0):
        raise ValueError(f"diversity_prob must be in [0, 1], got {diversity_prob!r}")
    if not (isinstance(diversity_resize, (int, float)) and 0.0 < diversity_resize < math.inf
            and diversity_resize != 1.0):
        raise ValueError(f"diversity_resize must be a positive number other than 1, "
                         f"got {diversity_resize!r}")
    if isinstance(ti_kernel, bool) or not isinstance(ti_kernel, int) or ti_kernel < 0 or (
            ti_kernel > 0 and ti_kernel % 2 == 0):
        raise ValueError(f"ti_kernel must be 0 (off) or an odd integer >= 1, got {ti_kernel!r}")
    if not (isinstance(ti_nsig, (int, float)) and 0.0 < ti_nsig < math.inf):
        raise ValueError(f"ti_nsig must be a positive number, got {ti_nsig!r}")
