"""Demographics encoder: age and sex, the one input every patient has.

Why an encoder of its own: age and sex carry the class prior (the diagnosis mix shifts with age) and most of the
survival signal (hazard grows with age), yet no other modality states them except in note prose. Input (B, 2):
[age in years at the index admission, 1 = male / 0 = female]; NaN where unknown (an unknown value enters as the
reference value with a "known" flag of 0, never as age 0). One token, always valid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.layers import freeze

AGE_CENTRE, AGE_SCALE = 60.0, 20.0  # years: (age - 60) / 20 keeps adult ages within about +-2


@dataclass
class DemographicsEncoderConfig:
    width: int = 32


def demographic_features(x: torch.Tensor) -> torch.Tensor:
    """(B, 2) [age years, male] -> (B, 5): scaled age, its square, male, age known, sex known."""
    x = x.float()
    age, male = x[:, 0], x[:, 1]
    age_known, sex_known = torch.isfinite(age), torch.isfinite(male)
    a = torch.where(age_known, (age - AGE_CENTRE) / AGE_SCALE, torch.zeros_like(age)).clamp(-4, 4)
    m = torch.where(sex_known, male, torch.full_like(male, 0.5))
    return torch.stack([a, a * a, m, age_known.float(), sex_known.float()], -1)


class DemographicsEncoder(nn.Module):
    def __init__(self, config: DemographicsEncoderConfig):
        super().__init__()
        self.config = config
        self.proj = nn.Linear(5, config.width)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2) -> tokens (B, 1, D), mask (B, 1) all True."""
        tokens = self.proj(demographic_features(x)).unsqueeze(1)
        return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)

    def lock(self) -> None:
        freeze(self)
