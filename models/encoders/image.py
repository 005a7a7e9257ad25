"""Image encoder over a radiograph (2D) or a CT/MR/PET volume (3D), sizes from config: a ViT (`arch: vit`) or a
small CNN (`arch: cnn`).

ViT: patches from MONAI's PatchEmbeddingBlock (conv projection + learnable position embedding), then
models.layers.Transformer (monai.networks.nets.ViT's attention needs einops, not a dependency here).
CNN: strided MONAI Convolution blocks, then average pooling to a small grid of tokens. Why both: with a few hundred
images a ViT learns little; a CNN's locality prior finds the findings (cardiac silhouette, opacities, filling
defects) from the same data. No batch norm: statistics over a batch would mix in the padding of absent images;
group norm (`groups`) normalises each image on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from monai.networks.blocks import Convolution, PatchEmbeddingBlock
from torch import nn

from models.layers import Transformer, freeze


@dataclass
class ImageEncoderConfig:
    spatial_dims: int = 2
    img_size: list[int] = field(default_factory=lambda: [64, 64])  # (rows, cols) or (z, y, x), data_contracts/model_io
    patch_size: list[int] = field(default_factory=lambda: [16, 16])
    in_channels: int = 1
    width: int = 32
    mlp_dim: int = 64
    layers: int = 1
    heads: int = 2
    dropout: float = 0.0
    arch: str = "vit"  # "vit" | "cnn"
    channels: list[int] = field(default_factory=lambda: [8, 16, 32])  # cnn: per stride-2 stage
    grid: list[int] = field(default_factory=lambda: [4, 4])  # cnn: tokens = prod(grid), pooled feature map
    groups: int = 0  # cnn: GroupNorm groups after each convolution (0: none); per image, so padding never mixes in


class ImageEncoder(nn.Module):
    def __init__(self, config: ImageEncoderConfig):
        super().__init__()
        self.config = config
        c = config
        if c.arch == "cnn":
            layers, prev = [], c.in_channels
            for ch in c.channels:
                layers.append(Convolution(c.spatial_dims, prev, ch, strides=2, kernel_size=3, act="GELU",
                                          norm=("group", {"num_groups": c.groups}) if c.groups else None,
                                          dropout=c.dropout or None))
                prev = ch
            self.cnn = nn.Sequential(*layers)
            pool = nn.AdaptiveAvgPool3d if c.spatial_dims == 3 else nn.AdaptiveAvgPool2d
            self.pool = pool(tuple(c.grid))
            self.proj = nn.Linear(prev, c.width)
            self.pos = nn.Parameter(torch.zeros(1, int(torch.tensor(c.grid).prod()), c.width))
            nn.init.normal_(self.pos, std=0.02)
            return
        self.patches = PatchEmbeddingBlock(in_channels=c.in_channels, img_size=c.img_size, patch_size=c.patch_size,
                                           hidden_size=c.width, num_heads=c.heads, proj_type="conv",
                                           pos_embed_type="learnable", dropout_rate=c.dropout,
                                           spatial_dims=c.spatial_dims)
        self.transformer = Transformer(c.width, c.layers, c.heads, mlp_ratio=c.mlp_dim / c.width, dropout=c.dropout)

    @staticmethod
    def normalise(x: torch.Tensor) -> torch.Tensor:
        """Per-image standardisation: staged images are in HU or stored pixel units, so this is the first step."""
        dims = tuple(range(1, x.ndim))
        x = torch.nan_to_num(x.float())
        mean = x.mean(dim=dims, keepdim=True)
        std = x.std(dim=dims, keepdim=True).clamp(min=1e-3)
        return (x - mean) / std

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, *img_size) -> tokens (B, N, D), mask (B, N) all True; N = patches (vit) or prod(grid) (cnn)."""
        if self.config.arch == "cnn":
            h = self.pool(self.cnn(self.normalise(x)))  # (B, ch, *grid)
            tokens = self.proj(h.flatten(2).transpose(1, 2)) + self.pos  # (B, N, D)
            return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        tokens = self.patches(self.normalise(x))  # (B, N, D)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        tokens, _ = self.transformer(tokens, mask)
        return tokens, mask

    def lock(self) -> None:
        freeze(self)
