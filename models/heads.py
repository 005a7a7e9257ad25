"""Task heads on the fused embedding (B, W): multiclass diagnosis, binary risk, Cox survival log-risk."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class HeadsConfig:
    n_classes: int = 4  # none, pneumonia, heart_failure, pulmonary_embolism
    dropout: float = 0.0


class MulticlassHead(nn.Module):
    def __init__(self, width: int, n_classes: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Dropout(dropout), nn.Linear(width, n_classes))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, W) -> logits (B, classes)."""
        return self.net(z)


class BinaryHead(nn.Module):
    def __init__(self, width: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Dropout(dropout), nn.Linear(width, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, W) -> logit (B,)."""
        return self.net(z).squeeze(-1)


class CoxHead(nn.Module):
    """Linear log-risk without a bias: the Cox partial likelihood does not identify one."""

    def __init__(self, width: int, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)
        self.linear = nn.Linear(width, 1, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, W) -> log-risk (B,)."""
        return self.linear(self.drop(self.norm(z))).squeeze(-1)
