"""Labs and vitals encoder: one token per vocabulary code, from the mean of that code's standardised values.

Input (B, T, 3): [vocabulary index, value in the canonical unit, days from the index date] (data_contracts/model_io).
A row whose index is negative is padding (values stay finite, as the contract asks). The vocabulary (`codes`, LOINC
in index order, the last `<other>`) is learned from the training split (tasks/training/labs_vocab.py) and saved in
this config; a config without `codes` is one saved before: the 7-code catalogue, no `<other>`.

Why per code and standardised: lab values span mmHg to pg/mL and a patient has 1-3 readings of each; what a reading
says is where the patient's level sits among other patients' for that code. Values go through asinh (log-like for the
wide-range labs), then a per-code affine whose initial shift/scale come from the config's reference ranges (normal
adult ranges in the canonical unit; both stay learnable). Not fitted to the data: every DDP rank and every resumed run
starts from the same weights. Readings of a code are mean-pooled into one
token, a small transformer (with an always-valid summary token) lets codes interact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.layers import Transformer, freeze


@dataclass
class LabsEncoderConfig:
    n_codes: int = 7  # vocabulary size, `<other>` included (7: the catalogue of configs saved before `codes`)
    width: int = 32
    layers: int = 1
    heads: int = 2
    time_freqs: int = 8  # kept for configs saved by earlier versions; the per-code tokens ignore time
    dropout: float = 0.0
    reference: list[list[float]] | None = None  # per code [low, high] of the normal range, canonical unit
    codes: list[str] | None = None  # LOINC per index, the last "<other>" (tasks/training/labs_vocab.py)


def _table(n: int, drawn: int, width: int, salt: int) -> nn.Embedding:
    """An (n, width) embedding whose first `drawn` rows come from the global RNG exactly as nn.Embedding(drawn)
    would, and the rest (the `<other>` row) from a generator of their own: adding `<other>` changes no other
    initial weight of the model (a cohort with only catalogue codes starts where it always did)."""
    table = nn.Embedding(drawn, width)
    if n == drawn:
        return table
    extra = torch.randn(n - drawn, width, generator=torch.Generator().manual_seed(salt))
    return nn.Embedding.from_pretrained(torch.cat([table.weight.data, extra]), freeze=False)


class LabsEncoder(nn.Module):
    def __init__(self, config: LabsEncoderConfig):
        super().__init__()
        self.config = config
        c = config
        drawn = c.n_codes - 1 if c.codes and c.codes[-1] == "<other>" else c.n_codes
        self.code = _table(c.n_codes, drawn, c.width, salt=1)
        self.shift = nn.Parameter(torch.zeros(c.n_codes))  # per-code standardisation of asinh(value)
        self.log_scale = nn.Parameter(torch.zeros(c.n_codes))
        ref = torch.tensor(c.reference if c.reference else [[1.0, 3.0]] * c.n_codes, dtype=torch.float32)
        lo, hi = torch.asinh(ref[:, 0]), torch.asinh(ref[:, 1])
        with torch.no_grad():  # the normal range spans about +-1 sd
            self.shift.copy_((lo + hi) / 2)
            self.log_scale.copy_(((hi - lo) / 2).clamp(min=1e-3).log())
        self.value = nn.Sequential(nn.Linear(2, c.width), nn.GELU(), nn.Linear(c.width, c.width))
        self.value_dir = _table(c.n_codes, drawn, c.width, salt=2)  # code-specific reading of the standardised level
        self.summary = nn.Parameter(torch.zeros(1, 1, c.width))  # always attendable: no all-masked rows
        self.transformer = Transformer(c.width, c.layers, c.heads, dropout=c.dropout)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, 3) -> tokens (B, 1 + C, D), mask (B, 1 + C); token 0 summarises, token 1 + c is code c."""
        x = torch.nan_to_num(x.float())
        idx = x[..., 0].round().long()
        valid = idx >= 0  # (B, T)
        onehot = nn.functional.one_hot(idx.clamp(0, self.config.n_codes - 1), self.config.n_codes)
        onehot = onehot.float() * valid.unsqueeze(-1)  # (B, T, C); padding rows count nowhere
        v = torch.asinh(x[..., 1]).clamp(-30, 30)  # (B, T)
        z = (v.unsqueeze(-1) - self.shift) / self.log_scale.exp()  # (B, T, C): every row standardised per code
        count = onehot.sum(1)  # (B, C)
        level = (onehot * z).sum(1) / count.clamp(min=1)  # (B, C): mean standardised reading per code
        level = level.clamp(-8, 8)
        seen = count > 0  # (B, C)
        feats = torch.stack([level, (count - 2.0) / 2.0], -1)  # (B, C, 2)
        tokens = self.code.weight + self.value(feats) + level.unsqueeze(-1) * self.value_dir.weight  # (B, C, D)
        tokens = torch.where(seen.unsqueeze(-1), tokens, torch.zeros_like(tokens))
        tokens = torch.cat([self.summary.expand(x.shape[0], -1, -1), tokens], 1)  # (B, 1 + C, D)
        attend = torch.cat([torch.ones_like(seen[:, :1]), seen], 1)
        tokens, _ = self.transformer(tokens, attend)
        mask = torch.cat([seen.any(1, keepdim=True), seen], 1)
        return tokens, mask

    def lock(self) -> None:
        freeze(self)
