"""Small transformer blocks shared by the labs encoder and the fusion, written out so attention weights are visible."""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    """Pre-norm transformer block; returns the attention of every query over the keys, averaged over heads."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x (B, T, D); valid (B, T) bool, True = attend to this key. Every row needs one valid key (else NaN).
        h = self.ln_1(x)
        out, attn = self.attn(h, h, h, key_padding_mask=~valid, need_weights=True)  # attn (B, T, T)
        x = x + out
        return x + self.mlp(self.ln_2(x)), attn


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, D), (B, T) -> (B, T, D) and the last block's attention (B, T, T)."""
        attn = None
        for block in self.blocks:
            x, attn = block(x, valid)
        return self.ln_f(x), attn


def masked_mean(tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, T, D), (B, T) -> (B, D); rows without a valid token give 0 (callers carry the presence mask with it)."""
    w = valid.to(tokens.dtype).unsqueeze(-1)  # (B, T, 1)
    total = torch.where(valid.unsqueeze(-1), tokens, torch.zeros_like(tokens)).sum(1)
    return total / w.sum(1).clamp(min=1.0)


def freeze(module: nn.Module) -> None:
    """Freeze every parameter and keep the module in eval mode (the `lock()` of each tower)."""
    for p in module.parameters():
        p.requires_grad_(False)
    module.locked = True  # MultimodalModel.train() keeps locked towers in eval mode
    module.eval()
