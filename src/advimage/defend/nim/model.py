"""Noisy image modeling autoencoder (You et al., NeurIPS 2023, "Beyond Pretrained Features:
Noisy Image Modeling Provides Adversarial Defense").

An MAE-style ViT encoder/decoder (He et al., 2022, "Masked Autoencoders Are Scalable Vision
Learners") whose masking is replaced by Gaussian noise: the encoder sees every patch of
``x~ = x + (sigma / 255) n``, ``n ~ N(0, I)``, with ``sigma ~ Gamma(shape 25, scale 3)`` per
image (mean 75 on the 0-255 scale), and the decoder predicts the clean ``x``. The loss is MSE
against per-patch normalized targets (MAE's ``norm_pix_loss``) over all patches. ``mode="mim"``
is the masked-image-modeling baseline with the same network: 75% of the patches are dropped
from the encoder, mask tokens fill them in the decoder, the loss covers masked patches only.

Output images: the decoder predicts *normalized* patches, so an image needs a per-patch mean
and standard deviation. The official code (``NIM_MAE_ViT.forward_loss``, called as
``model(imgs, noisy_imgs)`` at test time) takes them from the image that was handed to the
defense *before* noise was added; :meth:`NIMAutoencoder.reconstruct` does the same with its
``reference`` argument (see :class:`advimage.defend.nim.defense.De3Defense`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Gamma

from advimage.models.vit import Block

__all__ = ["NIMAutoencoder", "NIMConfig", "normalized_patches", "patchify", "unpatchify"]

_MODES = ("nim", "mim")
_EPS = 1e-6  # added to the per-patch variance (MAE's norm_pix_loss)


@dataclass(frozen=True)
class NIMConfig:
    """Architecture and corruption of a NIM / MIM autoencoder.

    Defaults: the small 32x32 model (4x4 patches, encoder dim 192 depth 6, decoder dim 128
    depth 2), Gamma(25, 3) noise levels on the 0-255 scale, 75% masking for ``mode="mim"``.
    This default has 3.1 M parameters; one training step at batch 128 on this project's shared
    2-core CPU measured 43-60 images/s for NIM (all 64 tokens) and about 120 images/s for MIM
    (16 visible tokens) on one thread, i.e. 15-20 min per CIFAR-10 epoch for NIM.
    """

    image_size: tuple[int, int] = (32, 32)  # (H, W) pixels
    in_channels: int = 3
    patch_size: int = 4  # pixels per patch side
    enc_dim: int = 192
    enc_depth: int = 6
    enc_heads: int = 3
    dec_dim: int = 128
    dec_depth: int = 2
    dec_heads: int = 4
    mlp_ratio: float = 4.0  # MLP width / token width
    mode: str = "nim"  # "nim" (Gaussian noise) or "mim" (random masking)
    gamma_shape: float = 25.0  # concentration of the per-image sigma (0-255 scale)
    gamma_scale: float = 3.0  # scale of the per-image sigma (0-255 scale); mean = shape*scale
    mask_ratio: float = 0.75  # share of patches hidden from the encoder (mim only)

    def __post_init__(self) -> None:
        h, w = (int(s) for s in self.image_size)
        object.__setattr__(self, "image_size", (h, w))
        p = self.patch_size
        if p < 1 or h < 1 or w < 1 or h % p or w % p:
            raise ValueError(f"image size {h}x{w} must be divisible by patch_size {p}")
        if self.mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {self.mode!r}")
        if self.enc_dim % self.enc_heads or self.dec_dim % self.dec_heads:
            raise ValueError("enc_dim/dec_dim must be divisible by enc_heads/dec_heads")
        if not (self.gamma_shape > 0 and self.gamma_scale > 0):
            raise ValueError("gamma_shape and gamma_scale must be > 0")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must lie in (0, 1), got {self.mask_ratio}")

    @property
    def num_patches(self) -> int:
        return (self.image_size[0] // self.patch_size) * (self.image_size[1] // self.patch_size)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NIMConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown NIM config key {unknown[0]!r}")
        return cls(**{**d, "image_size": tuple(d.get("image_size", (32, 32)))})


def patchify(x: Tensor, p: int) -> Tensor:
    """(B, C, H, W) -> (B, N, p*p*C), patches row-major, pixels (row, col, channel)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p)  # (B, C, h, p, w, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: Tensor, p: int, channels: int, size: tuple[int, int]) -> Tensor:
    """Inverse of :func:`patchify`: (B, N, p*p*C) -> (B, C, H, W)."""
    b = patches.shape[0]
    gh, gw = size[0] // p, size[1] // p
    x = patches.reshape(b, gh, gw, p, p, channels)  # (B, h, w, p, p, C)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, gh * p, gw * p)


def normalized_patches(x: Tensor, p: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-patch normalized targets of MAE's ``norm_pix_loss``: ``(t - mean) / sqrt(var+1e-6)``.

    Returns ``(target, mean, std)``; ``var`` is the unbiased variance over a patch's pixels.
    """
    t = patchify(x, p)  # (B, N, P)
    mean = t.mean(dim=-1, keepdim=True)  # (B, N, 1)
    std = (t.var(dim=-1, keepdim=True) + _EPS).sqrt()  # (B, N, 1)
    return (t - mean) / std, mean, std


class NIMAutoencoder(nn.Module):
    """ViT autoencoder trained by noisy (or masked) image modeling; see the module doc.

    Args:
        config: the architecture and corruption settings.
    """

    def __init__(self, config: NIMConfig) -> None:
        super().__init__()
        self.config = c = config
        n = c.num_patches
        patch_dim = c.patch_size**2 * c.in_channels
        self.patch_embed = nn.Conv2d(c.in_channels, c.enc_dim, c.patch_size, stride=c.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.enc_dim))  # (1, 1, D)
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, c.enc_dim))  # (1, N+1, D)
        mlp = int(c.enc_dim * c.mlp_ratio)
        self.blocks = nn.ModuleList(Block(c.enc_dim, c.enc_heads, mlp) for _ in range(c.enc_depth))
        self.norm = nn.LayerNorm(c.enc_dim)
        self.decoder_embed = nn.Linear(c.enc_dim, c.dec_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.dec_dim))  # (1, 1, Dd)
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, n + 1, c.dec_dim))  # (1, N+1, Dd)
        dmlp = int(c.dec_dim * c.mlp_ratio)
        self.decoder_blocks = nn.ModuleList(
            Block(c.dec_dim, c.dec_heads, dmlp) for _ in range(c.dec_depth))
        self.decoder_norm = nn.LayerNorm(c.dec_dim)
        self.decoder_pred = nn.Linear(c.dec_dim, patch_dim)
        for param in (self.cls_token, self.pos_embed, self.mask_token, self.decoder_pos_embed):
            nn.init.trunc_normal_(param, std=0.02)  # MAE/DeiT init: N(0, 0.02) truncated
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)  # MAE's init for linear layers
                nn.init.zeros_(module.bias)

    # ----- corruption -----
    def sample_sigma(self, x: Tensor) -> Tensor:
        """Per-image noise levels ``sigma ~ Gamma(shape, scale)`` on the 0-255 scale: (B,)."""
        c = self.config
        conc = torch.full((x.shape[0],), c.gamma_shape, dtype=x.dtype, device=x.device)
        return Gamma(conc, 1.0 / c.gamma_scale).sample()  # (B,) rate = 1 / scale

    def add_noise(self, x: Tensor, sigma: Tensor | float, noise: Tensor | None = None) -> Tensor:
        """``x + (sigma / 255) * n`` with ``n ~ N(0, I)`` (or the given ``noise``); no clamping."""
        n = torch.randn_like(x) if noise is None else noise
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if s.dim() == 1:
            s = s.view(-1, 1, 1, 1)  # (B, 1, 1, 1)
        return x + s / 255.0 * n  # (B, C, H, W)

    def random_mask(self, x: Tensor) -> Tensor:
        """Per-image random mask (MAE): (B, N) bool, True = hidden; int(N * (1 - ratio)) kept."""
        b, n = x.shape[0], self.config.num_patches
        keep = int(n * (1 - self.config.mask_ratio))
        order = torch.rand(b, n, device=x.device).argsort(dim=1)  # (B, N) random permutation
        mask = torch.ones(b, n, dtype=torch.bool, device=x.device)
        mask.scatter_(1, order[:, :keep], False)
        return mask

    # ----- network -----
    def _check(self, x: Tensor) -> None:
        c = self.config
        want = (c.in_channels, *c.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"NIM model expects (B, {want[0]}, {want[1]}, {want[2]}) images, "
                             f"got {tuple(x.shape)}")

    def encode(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Encoder tokens (B, 1 + kept, D) of ``x``; ``mask`` (B, N) drops hidden patches."""
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, D)
        tokens = tokens + self.pos_embed[:, 1:]
        if mask is not None:  # every row keeps the same count, so a reshape regroups them
            tokens = tokens[~mask].reshape(x.shape[0], -1, tokens.shape[-1])  # (B, kept, D)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)  # (B, 1, D)
        out = torch.cat([cls, tokens], dim=1)
        for block in self.blocks:
            out = block(out)
        return self.norm(out)

    def decode(self, latent: Tensor, mask: Tensor | None = None) -> Tensor:
        """Predicted normalized patches (B, N, p*p*C); mask tokens fill hidden patches."""
        z = self.decoder_embed(latent)  # (B, 1 + kept, Dd)
        if mask is not None:
            b, n = mask.shape
            full = self.mask_token.expand(b, n, -1).clone()  # (B, N, Dd)
            full[~mask] = z[:, 1:].reshape(-1, z.shape[-1])
            z = torch.cat([z[:, :1], full], dim=1)  # (B, N+1, Dd)
        z = z + self.decoder_pos_embed
        for block in self.decoder_blocks:
            z = block(z)
        return self.decoder_pred(self.decoder_norm(z))[:, 1:]  # (B, N, P)

    def draw_corruption(self, x: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """A training step's random corruption of ``x`` (B, C, H, W), in the order
        :meth:`forward` draws it: ``(sigma (B,), noise like x, None)`` for NIM,
        ``(None, None, mask (B, N))`` for MIM. Under torchrun every rank draws it for the
        global batch and keeps its rows (:mod:`advimage.studies.nim.train`)."""
        if self.config.mode == "nim":
            return self.sample_sigma(x), torch.randn_like(x), None
        return None, None, self.random_mask(x)

    def corrupted_loss(self, x: Tensor, sigma: Tensor | None, noise: Tensor | None,
                       mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(loss, predicted patches)`` of clean ``x`` under a drawn corruption
        (:meth:`draw_corruption`): NIM, the MSE over every patch of ``x + sigma / 255 *
        noise``; MIM, over the hidden patches only. Targets are the normalized patches."""
        self._check(x)
        target, _, _ = normalized_patches(x, self.config.patch_size)  # (B, N, P)
        if mask is None:
            if sigma is None or noise is None:
                raise ValueError("a NIM step needs sigma and noise (draw_corruption)")
            pred = self.decode(self.encode(self.add_noise(x, sigma, noise)))
            return ((pred - target) ** 2).mean(), pred
        pred = self.decode(self.encode(x, mask), mask)
        per_patch = ((pred - target) ** 2).mean(dim=-1)  # (B, N)
        return per_patch[mask].mean(), pred

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Training step on clean images ``x`` in [0, 1]: ``(loss, predicted patches)``."""
        self._check(x)
        return self.corrupted_loss(x, *self.draw_corruption(x))

    def reconstruct(self, corrupted: Tensor, reference: Tensor) -> Tensor:
        """Image (B, C, H, W) from ``corrupted``, un-normalized with ``reference``'s patch stats.

        The encoder sees every patch of ``corrupted`` (a MIM model too, which gives the
        MIM-vs-NIM baseline: same network, never trained on noise); the predicted normalized
        patches are mapped back with the per-patch mean and std of ``reference`` (the official
        code uses the image given to the defense before noise was added). Not clamped.
        """
        self._check(corrupted)
        self._check(reference)
        c = self.config
        _, mean, std = normalized_patches(reference, c.patch_size)  # (B, N, 1) each
        pred = self.decode(self.encode(corrupted))  # (B, N, P)
        return unpatchify(pred * std + mean, c.patch_size, c.in_channels, c.image_size)
