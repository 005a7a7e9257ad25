"""Labs and vitals encoder: a transformer over (catalogue code, value, time) tokens, padded per patient.

Input (B, T, 3): [catalogue index, value in the canonical unit, days from the index date] (data_contracts/model_io).
A row whose catalogue index is negative is padding (values stay finite, as the contract asks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from models.layers import Transformer, freeze


@dataclass
class LabsEncoderConfig:
    n_codes: int = 7  # the lab catalogue (7 labs/vitals with LOINC codes in the synthetic cohort)
    width: int = 32
    layers: int = 1
    heads: int = 2
    time_freqs: int = 8  # sinusoids over days, periods from 1 day to ~3 years
    dropout: float = 0.0


class LabsEncoder(nn.Module):
    def __init__(self, config: LabsEncoderConfig):
        super().__init__()
        self.config = config
        c = config
        self.code = nn.Embedding(c.n_codes, c.width)
        self.value_dir = nn.Embedding(c.n_codes, c.width)  # per-code direction for the (asinh-scaled) value
        self.value_shift = nn.Embedding(c.n_codes, 1)
        nn.init.zeros_(self.value_shift.weight)
        periods = torch.logspace(0, math.log10(1000.0), c.time_freqs)
        self.register_buffer("omega", 2 * math.pi / periods, persistent=False)  # (F,)
        self.time = nn.Linear(2 * c.time_freqs, c.width)
        self.summary = nn.Parameter(torch.zeros(1, 1, c.width))  # always attendable: no all-masked rows
        self.transformer = Transformer(c.width, c.layers, c.heads, dropout=c.dropout)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, 3) -> tokens (B, 1 + T, D), mask (B, 1 + T); token 0 summarises, valid when any row is."""
        x = torch.nan_to_num(x.float())
        idx, value, days = x[..., 0].round().long(), x[..., 1], x[..., 2]
        valid = idx >= 0  # (B, T)
        code = idx.clamp(0, self.config.n_codes - 1)
        v = torch.asinh(value).unsqueeze(-1) + self.value_shift(code)  # (B, T, 1): spans mmHg..pg/mL
        phase = days.unsqueeze(-1) * self.omega  # (B, T, F)
        t = self.time(torch.cat([phase.sin(), phase.cos()], -1))  # (B, T, D)
        tokens = self.code(code) + v * self.value_dir(code) + t
        tokens = torch.cat([self.summary.expand(x.shape[0], -1, -1), tokens], 1)  # (B, 1 + T, D)
        attend = torch.cat([torch.ones_like(valid[:, :1]), valid], 1)
        tokens, _ = self.transformer(tokens, attend)
        mask = torch.cat([valid.any(1, keepdim=True), valid], 1)
        return tokens, mask

    def lock(self) -> None:
        freeze(self)
