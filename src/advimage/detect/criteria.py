"""The three noise-signature criteria, batched (Hu, Yu et al., NeurIPS 2019).

"A New Defense Against Adversarial Images: Turning a Weakness into a Strength" observes that
natural images sit in a region where random noise barely moves the prediction while gradient
attacks change the label in a few steps. An adversarial image is the opposite on at least one
count, so every criterion here *flags large values*:

* C1 (:func:`softmax_l1_change`): ``|| softmax(f(x)) - softmax(f(x + eps)) ||_1`` with
  ``eps ~ N(0, sigma^2 I)`` -- adversarial images lie close to a decision boundary, so noise
  changes their softmax more (official ``l1_detection``; flagged when ``> threshold``);
* C2t / C2u (:func:`steps_to_flip`): how many raw-gradient steps a targeted attack towards a
  random other class / an untargeted attack needs before the predicted label changes --
  adversarial images are harder to move on (official ``targeted_detection`` /
  ``untargeted_detection``; flagged when ``> threshold``).

The official code runs one image at a time with two forwards per step. Here a whole batch runs
at once, the success test reuses the logits of the gradient pass, and a sample leaves the
batch as soon as its label flips (active-set compaction, as :mod:`advimage.attacks.loop`
does), so it stops costing compute. Step counts are those of the official loop exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from advimage.attacks.base import Model, check_positive_float, check_positive_int
from advimage.detect.step_search import StepSearch, joint_steps_to_flip

__all__ = ["draw_noise", "random_targets", "softmax_l1_change", "steps_to_flip"]


def draw_noise(x: Tensor, sigma: float, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` Gaussian noise draws of std ``sigma`` for the batch ``x`` -> ``(n, B, C, H, W)``."""
    check_positive_int(n, "n_noise")
    sigma = check_positive_float(sigma, "sigma")
    shape = (n, *x.shape)
    return sigma * torch.randn(shape, generator=generator, dtype=x.dtype, device=x.device)


def random_targets(
    labels: Tensor, num_classes: int, generator: torch.Generator | None = None
) -> Tensor:
    """A uniformly random class different from each label, ``(B,)`` (official ``random_label``)."""
    if num_classes < 2:
        raise ValueError(f"a targeted criterion needs at least 2 classes, got {num_classes}")
    offset = torch.randint(
        1, num_classes, labels.shape, generator=generator, device=labels.device
    )  # (B,) in [1, K-1]
    return (labels + offset) % num_classes


def softmax_l1_change(
    model: Model, x: Tensor, noise: Tensor, clean_probs: Tensor | None = None
) -> Tensor:
    """C1: mean over draws of ``|| softmax(f(x)) - softmax(f(x + noise_k)) ||_1``, ``(B,)``.

    Differentiable in ``x`` under the caller's grad mode (the white-box adaptive attack of the
    paper minimizes it); the detector calls it under ``no_grad``. The noisy image is not
    clipped to the pixel box, as in the official ``noisy_img``.

    Args:
        model: Classifier returning logits ``(B, K)``.
        x: Images ``(B, C, H, W)``.
        noise: ``(n, B, C, H, W)`` draws (see :func:`draw_noise`) or one draw ``(B, C, H, W)``.
        clean_probs: ``softmax(f(x))`` ``(B, K)`` when already computed (saves a forward).
    """
    if noise.dim() == x.dim():
        noise = noise.unsqueeze(0)
    if tuple(noise.shape[1:]) != tuple(x.shape):
        raise ValueError(
            f"noise must have shape (n, *{tuple(x.shape)}), got {tuple(noise.shape)}"
        )
    probs = F.softmax(model(x), dim=1) if clean_probs is None else clean_probs  # (B, K)
    total = torch.zeros_like(probs[:, 0])  # (B,)
    for k in range(noise.shape[0]):
        noisy = F.softmax(model(x + noise[k]), dim=1)  # (B, K)
        total = total + (noisy - probs).abs().sum(dim=1)
    return total / noise.shape[0]


def steps_to_flip(
    model: Model,
    x: Tensor,
    label: Tensor,
    *,
    lr: float,
    radius: float,
    cap: int,
    target: Tensor | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    stop_at_fixed_point: bool = True,
) -> Tensor:
    """C2t (``target`` given) / C2u: gradient steps until the predicted label leaves ``label``.

    Each step is ``x <- project(x + lr * grad)`` with the *raw* gradient of the per-sample
    cross-entropy (ascent on ``CE(f(x), label)`` untargeted, descent on ``CE(f(x), target)``
    targeted) and the L-inf ball of ``radius`` around the input inside ``bounds``
    (:class:`advimage.threat.ThreatModel`), as the official SGD-on-the-image loop does.
    The count is ``min(k, cap)`` for the first iterate ``x_k`` whose label differs from
    ``label`` (so at most ``cap`` gradient passes), exactly the official ``counter``.

    Args:
        model: Classifier returning logits; evaluated in eval mode with frozen parameters.
        x: Images ``(B, C, H, W)`` inside ``bounds``.
        label: ``(B,)`` labels to move away from (the detector passes the model's prediction).
        lr: Step size on the raw gradient (pixel units per unit of gradient).
        radius: L-inf radius of the search, pixel units.
        cap: Most steps counted.
        target: ``(B,)`` target classes for C2t; ``None`` for C2u.
        bounds: Valid pixel range.
        stop_at_fixed_point: Stop a sample whose step leaves it exactly where it was (e.g. a
            saturated softmax makes the gradient zero): for a deterministic model every later
            step repeats it, so its count is ``cap``. Disable for randomized models.

    Returns:
        ``(B,)`` int64 step counts in ``[0, cap]`` on ``x``'s device.
    """
    search = StepSearch(lr=lr, radius=radius, cap=cap, target=target)
    return joint_steps_to_flip(model, x, label, [search], bounds=bounds,
                               stop_at_fixed_point=stop_at_fixed_point)[0]
