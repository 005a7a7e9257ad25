"""Omics encoder: an MLP from the gene panel to a few tokens. Missing genes are NaN; they enter as an indicator."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.layers import freeze


@dataclass
class OmicsEncoderConfig:
    n_features: int = 200  # genes in omics_features index order
    hidden: int = 64
    tokens: int = 4
    width: int = 32
    dropout: float = 0.0


class OmicsEncoder(nn.Module):
    def __init__(self, config: OmicsEncoderConfig):
        super().__init__()
        self.config = config
        c = config
        self.norm = nn.LayerNorm(c.n_features)  # per-sample: log2 expression sits around a baseline
        self.mlp = nn.Sequential(nn.Linear(2 * c.n_features, c.hidden), nn.GELU(), nn.Dropout(c.dropout),
                                 nn.Linear(c.hidden, c.tokens * c.width))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, G) -> tokens (B, K, D), mask (B, K); a sample with no measured gene has no valid token."""
        missing = torch.isnan(x)  # (B, G)
        values = self.norm(torch.where(missing, torch.zeros_like(x), x).float())
        h = torch.cat([values, missing.float()], -1)  # (B, 2G)
        tokens = self.mlp(h).view(x.shape[0], self.config.tokens, self.config.width)
        mask = (~missing).any(1, keepdim=True).expand(-1, self.config.tokens)
        return tokens, mask

    def lock(self) -> None:
        freeze(self)
