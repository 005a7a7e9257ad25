"""Image encoder: a ViT over a radiograph (2D) or a CT/MR/PET volume (3D), sizes from config.

Patches come from MONAI's PatchEmbeddingBlock (conv projection + learnable position embedding). The blocks are
models.layers.Transformer rather than monai.networks.nets.ViT, whose attention needs einops (not a dependency here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from monai.networks.blocks import PatchEmbeddingBlock
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


class ImageEncoder(nn.Module):
    def __init__(self, config: ImageEncoderConfig):
        super().__init__()
        self.config = config
        c = config
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
        """(B, C, *img_size) -> tokens (B, N_patches, D), mask (B, N_patches) all True."""
        tokens = self.patches(self.normalise(x))  # (B, N, D)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        tokens, _ = self.transformer(tokens, mask)
        return tokens, mask

    def lock(self) -> None:
        freeze(self)
