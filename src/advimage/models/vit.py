"""Vision Transformer for small images (Dosovitskiy et al., 2021, "An Image is Worth 16x16
Words: Transformers for Image Recognition at Scale").

``vit-tiny`` uses the ViT-Ti width (dim 192, 3 heads, MLP 768, depth 12; Touvron et al., 2021,
DeiT) with 4x4 patches so a 32x32 image gives 64 tokens plus a class token. Pre-norm blocks,
learned position embeddings, classification from the class token. Blocks are named
``blocks.<i>`` so their token outputs are reachable through ``ImageClassifier.features``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advimage.models.classifier import ImageClassifier
from advimage.models.factory import input_chw, register_model
from advimage.models.resnet18_cifar import CIFAR_MEAN, CIFAR_STD

__all__ = ["VisionTransformer"]


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape  # (B, N, D)
        qkv = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, D/heads)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, heads, N, D/heads)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))  # (B, N, D)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.mlp(self.norm2(x)))  # (B, N, D)


class VisionTransformer(nn.Module):
    """ViT with a conv patch embedding, class token and learned position embeddings."""

    def __init__(
        self,
        image_size: tuple[int, int],
        patch_size: int,
        in_channels: int,
        num_classes: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_dim: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        h, w = image_size
        if patch_size < 1 or h % patch_size or w % patch_size:
            raise ValueError(
                f"image size {h}x{w} must be divisible by patch_size {patch_size}"
            )
        self.grid = (h // patch_size, w // patch_size)
        num_patches = self.grid[0] * self.grid[1]
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))  # (1, 1, D)
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))  # (1, N+1, D)
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_dim, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)  # ViT/DeiT init: N(0, 0.02) truncated
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch_embed(x)  # (B, D, H/p, W/p)
        if tokens.shape[-2:] != self.grid:
            raise ValueError(
                f"expected a {self.grid[0]}x{self.grid[1]} patch grid, got "
                f"{tokens.shape[-2]}x{tokens.shape[-1]} (input {tuple(x.shape[-2:])})"
            )
        tokens = tokens.flatten(2).transpose(1, 2)  # (B, N, D)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)  # (B, 1, D)
        out = self.pos_drop(torch.cat([cls, tokens], dim=1) + self.pos_embed)  # (B, N+1, D)
        for block in self.blocks:
            out = block(out)
        return self.head(self.norm(out)[:, 0])  # (B, num_classes) from the class token


@register_model("vit-tiny")
def vit_tiny(
    num_classes: int = 10,
    *,
    input_shape: Sequence[int] = (3, 32, 32),
    patch_size: int = 4,
    dim: int = 192,
    depth: int = 12,
    heads: int = 3,
    mlp_dim: int = 768,
    dropout: float = 0.0,
    mean: Sequence[float] | None = CIFAR_MEAN,
    std: Sequence[float] | None = CIFAR_STD,
) -> ImageClassifier:
    """ViT-Tiny with 4x4 patches for 32x32 images; CIFAR-10 normalization by default."""
    shape = input_chw(input_shape, "vit-tiny")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    net = VisionTransformer(
        (shape[1], shape[2]), patch_size, shape[0], num_classes, dim, depth, heads, mlp_dim, dropout
    )
    return ImageClassifier(
        net, mean, std, arch="vit-tiny", num_classes=num_classes, input_shape=shape  # type: ignore[arg-type]
    )
