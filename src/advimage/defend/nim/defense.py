"""De^3 defense of You et al., NeurIPS 2023, "Beyond Pretrained Features: Noisy Image Modeling
Provides Adversarial Defense": denoise, then classify.

The input ``x`` gets fresh Gaussian noise ``x + (sigma_test / 255) n``; the NIM autoencoder
reconstructs it (un-normalizing its per-patch predictions with the patch statistics of ``x``
itself, as the official code does), the result is clamped to [0, 1] and classified. The fresh
noise makes the defense randomized (attack it with EOT); every step is differentiable. For the
"noise known to the attacker" setting the draw can be fixed with ``noise_seed`` (one draw, the
same for every image and call) or :meth:`De3Defense.set_noise`; the defense then declares itself
deterministic (``is_randomized`` False), as it does at ``sigma_test = 0``.

The harness defense ``nim`` (options ``path``, ``sigma_test``, ``noise_seed``) wraps the run's
classifier with a checkpoint written by :func:`advimage.studies.nim.train.pretrain`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from advimage.defend.base import Defense
from advimage.defend.nim.io import load_nim
from advimage.defend.nim.model import NIMAutoencoder
from advimage.defend.registry import defense_options, register_defense
from advimage.models.hub import load_model

__all__ = ["De3Defense", "build_nim_defense", "check_sigma_test"]

_OPTIONS = {"path": None, "sigma_test": 70.0, "noise_seed": None, "classifier": None}


def check_sigma_test(sigma: object) -> float:
    """``sigma_test`` on the 0-255 scale: a finite number >= 0."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise ValueError(f"sigma_test must be a number >= 0 (0-255 scale), got {sigma!r}")
    s = float(sigma)
    if not (s >= 0 and s != float("inf")):
        raise ValueError(f"sigma_test must be a finite number >= 0 (0-255 scale), got {sigma!r}")
    return s


class De3Defense(Defense):
    """Noise, reconstruct with a NIM model, clamp to [0, 1], classify.

    Args:
        nim: a trained :class:`NIMAutoencoder` (kept in eval mode); a ``mode="mim"`` model
            gives the masked-image-modeling baseline of the paper's NIM-vs-MIM comparison.
        classifier: images in [0, 1] -> logits.
        sigma_test: test-time noise level on the 0-255 scale (0 gives a deterministic model).
        noise_seed: if set, every image of every call gets the same draw ``n`` (C, H, W), made
            on the CPU by a generator with this seed (so the same on every device, and
            independent of which images share a batch: an attack that drops finished images
            from its batch still sees each image's exact noise). This is the "noise known to
            the attacker" setting; the defense is then deterministic.
    """

    is_differentiable = True
    uses_bpda = False

    def __init__(self, nim: NIMAutoencoder, classifier: nn.Module, sigma_test: float = 70.0,
                 noise_seed: int | None = None) -> None:
        super().__init__()
        if not isinstance(nim, NIMAutoencoder):
            raise ValueError(f"De3Defense needs a NIMAutoencoder, got {type(nim).__name__}")
        if noise_seed is not None and (isinstance(noise_seed, bool)
                                       or not isinstance(noise_seed, int)):
            raise ValueError(f"noise_seed must be an int or None, got {noise_seed!r}")
        self.nim = nim.eval()
        self.classifier = classifier
        self.sigma_test = sigma_test
        self.noise_seed = noise_seed
        self._noise: Tensor | None = None
        self._seeded: tuple[int, Tensor] | None = None  # (seed, its (C, H, W) draw)

    @property
    def is_randomized(self) -> bool:
        """True while each call draws fresh noise (sigma_test > 0 and no fixed draw), so that
        evaluation demands EOT; a fixed draw or sigma_test = 0 makes the defense deterministic."""
        return self.sigma_test > 0 and self.noise_seed is None and self._noise is None

    @property
    def sigma_test(self) -> float:
        """Test-time noise level on the 0-255 scale (checked on assignment)."""
        return self._sigma_test

    @sigma_test.setter
    def sigma_test(self, value: float) -> None:
        self._sigma_test = check_sigma_test(value)

    def set_noise(self, noise: Tensor | None) -> None:
        """Fix the draw ``n`` ((C, H, W) or (B, C, H, W), standard normal units); None frees it."""
        if noise is not None:
            want = (self.nim.config.in_channels, *self.nim.config.image_size)
            if not isinstance(noise, Tensor) or tuple(noise.shape[-3:]) != want \
                    or noise.dim() not in (3, 4):
                shape = tuple(noise.shape) if isinstance(noise, Tensor) else type(noise).__name__
                raise ValueError(f"noise must have shape {want} or (B, *{want}), got {shape}")
        self._noise = noise

    def draw_noise(self, x: Tensor) -> Tensor:
        """The standard-normal draw ``n`` (B, C, H, W) the next forward pass uses."""
        if self._noise is not None:
            if self._noise.dim() == 4 and self._noise.shape[0] not in (1, x.shape[0]):
                raise ValueError(f"the fixed noise holds {self._noise.shape[0]} draws, the batch "
                                 f"{x.shape[0]} images")
            return self._noise.to(dtype=x.dtype, device=x.device).expand_as(x)
        if self.noise_seed is not None:
            if self._seeded is None or self._seeded[0] != self.noise_seed:
                shape = (self.nim.config.in_channels, *self.nim.config.image_size)  # (C, H, W)
                gen = torch.Generator().manual_seed(self.noise_seed)
                self._seeded = (self.noise_seed, torch.randn(shape, generator=gen))
            return self._seeded[1].to(dtype=x.dtype, device=x.device).expand_as(x)
        return torch.randn_like(x)

    def purify(self, x: Tensor) -> Tensor:
        """The denoised images (B, C, H, W) in [0, 1] the classifier sees."""
        if x.dim() != 4:
            raise ValueError(f"De3Defense expects NCHW images, got shape {tuple(x.shape)}")
        noisy = self.nim.add_noise(x, self.sigma_test, self.draw_noise(x))  # (B, C, H, W)
        return self.nim.reconstruct(noisy, x).clamp(0.0, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` in [0, 1] -> the classifier's logits ``(B, K)``."""
        return self.classifier(self.purify(x))  # (B, K)


@register_defense("nim")
def build_nim_defense(model: nn.Module, options: Mapping[str, Any]) -> Defense:
    """The ``nim`` (De^3) defense: options ``path`` (required), ``sigma_test``, ``noise_seed``,
    ``classifier``.

    ``classifier`` (a checkpoint for :func:`~advimage.models.hub.load_model`) replaces the run's
    model behind the purifier, so one run can compare pipelines whose classifiers were fine-tuned on
    different reconstructions (NIM vs MIM). The checkpoint's image size must match the
    classifier's ``input_shape`` when it has one; the autoencoder goes to the classifier's device.
    """
    o = defense_options("nim", options, _OPTIONS)
    if not o["path"]:
        raise ValueError("defense 'nim' needs options.path: a checkpoint from nim pretrain")
    device = next(iter(model.parameters()), torch.empty(0)).device  # the run's model's
    if o["classifier"]:
        model = load_model(str(o["classifier"]))[0].to(device).eval()
    shape = getattr(model, "input_shape", None)
    size = (int(shape[1]), int(shape[2])) if shape is not None and len(shape) == 3 else None
    nim = load_nim(Path(str(o["path"])).expanduser(), image_size=size)
    if shape is not None and len(shape) == 3 and int(shape[0]) != nim.config.in_channels:
        raise ValueError(f"NIM checkpoint has {nim.config.in_channels} channels, the classifier "
                         f"expects {int(shape[0])}")
    return De3Defense(nim.to(device), model, sigma_test=o["sigma_test"],
                      noise_seed=o["noise_seed"])
