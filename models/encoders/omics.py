"""Omics encoder: per-gene standardisation, input dropout and a narrow MLP from the gene panel to a few tokens.

Missing genes are NaN; they enter as an indicator and as the gene's mean (0 after standardisation), never as 0
expression. Why narrow: hundreds of genes against a few hundred patients memorise the training set otherwise; the
signal sits in gene modules, which a low-rank first layer can average. Standardisation is per sample over its measured
genes (log2 expression sits around a baseline), then a learnable per-gene affine: no statistics fitted to a batch.
"""

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
    dropout: float = 0.0  # after the first layer
    input_dropout: float = 0.0  # on the standardised genes, in training


class OmicsEncoder(nn.Module):
    def __init__(self, config: OmicsEncoderConfig):
        super().__init__()
        self.config = config
        c = config
        self.shift = nn.Parameter(torch.zeros(c.n_features))
        self.log_scale = nn.Parameter(torch.zeros(c.n_features))
        self.drop_in = nn.Dropout(c.input_dropout)
        self.mlp = nn.Sequential(nn.Linear(2 * c.n_features, c.hidden), nn.GELU(), nn.Dropout(c.dropout),
                                 nn.Linear(c.hidden, c.tokens * c.width))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, G) -> tokens (B, K, D), mask (B, K); a sample with no measured gene has no valid token."""
        x = x.float()
        missing = ~torch.isfinite(x)  # (B, G)
        clean = torch.where(missing, torch.zeros_like(x), x)
        n = (~missing).sum(1, keepdim=True).clamp(min=1)  # (B, 1)
        mean = clean.sum(1, keepdim=True) / n
        sd = ((torch.where(missing, torch.zeros_like(x), x - mean) ** 2).sum(1, keepdim=True) / n).sqrt()
        z = ((clean - mean) / sd.clamp(min=1e-3) - self.shift) * (-self.log_scale).exp()
        z = z.clamp(-10, 10)
        z = self.drop_in(torch.where(missing, torch.zeros_like(z), z))  # (B, G)
        tokens = self.mlp(torch.cat([z, missing.float()], -1)).view(x.shape[0], self.config.tokens, self.config.width)
        mask = (~missing).any(1, keepdim=True).expand(-1, self.config.tokens)
        return tokens, mask

    def lock(self) -> None:
        freeze(self)
