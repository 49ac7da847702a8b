"""ViT classifier whose trunk is a NIM / MIM encoder (You et al., NeurIPS 2023, "Beyond
Pretrained Features: Noisy Image Modeling Provides Adversarial Defense").

``nim-vit`` has exactly the encoder of :class:`advimage.defend.nim.model.NIMAutoencoder`
(conv patch embedding, class token, learned position embeddings, pre-norm blocks, final
LayerNorm; same parameter names and shapes) plus a fresh linear head, so the encoder's
weights copy in one-to-one (:func:`advimage.studies.nim.finetune.finetune`).

Pooling: ``pool="mean"`` (default) averages the patch tokens (class token excluded) and
LayerNorms the average, as MAE's fine-tuning does (He et al., 2022, ``global_pool``) and as the
official NIM code fine-tunes; ``pool="cls"`` classifies the normed class token (ViT/DeiT).
One deviation from MAE: the pooled feature's LayerNorm is the encoder's final ``norm``
(initialized from the pre-trained one) rather than a new ``fc_norm`` at identity.

Inputs are [0, 1] images and there is no normalization inside the model: the NIM encoder was
pre-trained on raw [0, 1] pixels (plus noise), see :mod:`advimage.studies.nim.train`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from advimage.models.classifier import ImageClassifier
from advimage.models.factory import input_chw, register_model
from advimage.models.vit import VisionTransformer

__all__ = ["NIMViT", "POOLS"]

POOLS = ("mean", "cls")
_HEAD_STD = 2e-5  # MAE fine-tuning's head init: N(0, 2e-5) truncated (near-zero logits)


class NIMViT(VisionTransformer):
    """The NIM encoder (``patch_embed``, ``cls_token``, ``pos_embed``, ``blocks``, ``norm``) + head.

    The token path equals ``NIMAutoencoder.encode`` without a mask: adding ``pos_embed`` after
    concatenating the class token is the same sum as the encoder's split addition.
    """

    def __init__(self, image_size: tuple[int, int], patch_size: int, in_channels: int,
                 num_classes: int, dim: int, depth: int, heads: int, mlp_dim: int,
                 pool: str = "mean") -> None:
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        super().__init__(image_size, patch_size, in_channels, num_classes, dim, depth, heads,
                         mlp_dim)
        self.pool = pool
        nn.init.trunc_normal_(self.head.weight, std=_HEAD_STD)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.pool == "cls":
            return super().forward(x)  # (B, K)
        tokens = self.patch_embed(x)  # (B, D, H/p, W/p)
        if tokens.shape[-2:] != self.grid:
            raise ValueError(f"expected a {self.grid[0]}x{self.grid[1]} patch grid, got "
                             f"{tokens.shape[-2]}x{tokens.shape[-1]} (input {tuple(x.shape[-2:])})")
        tokens = tokens.flatten(2).transpose(1, 2)  # (B, N, D)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)  # (B, 1, D)
        out = self.pos_drop(torch.cat([cls, tokens], dim=1) + self.pos_embed)  # (B, N+1, D)
        for block in self.blocks:
            out = block(out)
        return self.head(self.norm(out[:, 1:].mean(dim=1)))  # (B, K) from the mean patch token


@register_model("nim-vit")
def nim_vit(
    num_classes: int = 10,
    *,
    input_shape: Sequence[int] = (3, 32, 32),
    patch_size: int = 4,
    enc_dim: int = 192,
    enc_depth: int = 6,
    enc_heads: int = 3,
    mlp_ratio: float = 4.0,
    pool: str = "mean",
) -> ImageClassifier:
    """Classifier on a NIM encoder; defaults = ``NIMConfig()``'s encoder; no normalization."""
    shape = input_chw(input_shape, "nim-vit")
    if enc_dim < 1 or enc_depth < 1 or enc_heads < 1 or not mlp_ratio > 0:
        raise ValueError("enc_dim, enc_depth, enc_heads and mlp_ratio must be positive")
    net = NIMViT((shape[1], shape[2]), patch_size, shape[0], num_classes, enc_dim, enc_depth,
                 enc_heads, int(enc_dim * mlp_ratio), pool)
    return ImageClassifier(net, None, None, arch="nim-vit", num_classes=num_classes,
                           input_shape=shape)  # type: ignore[arg-type]
