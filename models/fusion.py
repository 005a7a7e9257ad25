"""Fusion: project each modality's tokens to a shared width, add a modality-type embedding, prepend a CLS token and
run a transformer whose attention crosses modalities. An absent modality's tokens are masked out of attention
(key_padding_mask) and their values replaced before any arithmetic, so they contribute nothing, not zeros."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.layers import Transformer, masked_mean


@dataclass
class FusionConfig:
    width: int = 32
    layers: int = 1
    heads: int = 2
    dropout: float = 0.0
    pool_skip: bool = True  # fused = CLS + mean of the present modalities' pooled tokens (a shortcut to the heads)


class Fusion(nn.Module):
    def __init__(self, config: FusionConfig, input_widths: dict[str, int]):
        super().__init__()
        self.config = config
        self.modalities = list(input_widths)
        self.proj = nn.ModuleDict({m: nn.Linear(d, config.width) for m, d in input_widths.items()})
        self.type_embed = nn.Embedding(len(self.modalities), config.width)
        # small init: at N(0, 1) the type vector (norm ~ sqrt(width)) dwarfs the content and every patient's vectors
        # point the same way (pairwise cosine ~1: the contrastive and masked-modality targets collapse)
        nn.init.normal_(self.type_embed.weight, std=0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, config.width))
        nn.init.normal_(self.cls, std=0.02)
        self.transformer = Transformer(config.width, config.layers, config.heads, dropout=config.dropout)

    def forward(self, tokens: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
                present: dict[str, torch.Tensor]) -> dict:
        """Fuse the modalities in `tokens`.

        Args:
            tokens: modality -> (B, T_m, D_m) encoder tokens; modalities missing from the dict are absent for all.
            masks: modality -> (B, T_m) bool, True = valid token.
            present: modality -> (B,) bool, False = the patient lacks the modality (whole-modality mask).

        Returns:
            fused (B, W): the CLS output (+ mean of the pooled, `pool_skip`);
            pooled: modality -> (B, W) masked mean of the fused tokens;
            unimodal: modality -> (B, W) masked mean of the projected tokens before the type embedding and fusion
                (for contrastive losses);
            present: modality -> (B,) bool, True where the modality had at least one valid token;
            attention: modality -> (B,) share of the CLS attention (last layer) over the modalities, 0 when absent.
        """
        seq, valid, spans, unimodal, has = [], [], {}, {}, {}
        start = 1
        for m in self.modalities:
            if m not in tokens:
                continue
            keep = masks[m] & present[m].unsqueeze(1)  # (B, T_m)
            x = torch.where(keep.unsqueeze(-1), tokens[m], torch.zeros_like(tokens[m]))  # drop NaN/garbage values
            x = self.proj[m](x)  # (B, T_m, W)
            unimodal[m], has[m] = masked_mean(x, keep), keep.any(1)  # content only: no type vector in it
            x = x + self.type_embed.weight[self.modalities.index(m)]
            seq.append(x)
            valid.append(keep)
            spans[m] = (start, start + x.shape[1])
            start += x.shape[1]
        b = next(iter(present.values())).shape[0]
        seq = torch.cat([self.cls.expand(b, -1, -1), *seq], 1)  # (B, 1 + sum T_m, W)
        valid = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=seq.device), *valid], 1)
        out, attn = self.transformer(seq, valid)  # (B, S, W), (B, S, S)
        cls_attn = attn[:, 0]  # (B, S): what the fused embedding reads from each token
        share = {m: cls_attn[:, s:e].sum(1) for m, (s, e) in spans.items()}
        total = torch.stack(list(share.values()), 1).sum(1).clamp(min=1e-12) if share else None
        pooled = {m: masked_mean(out[:, s:e], valid[:, s:e]) for m, (s, e) in spans.items()}
        fused = out[:, 0]  # (B, W)
        if self.config.pool_skip and pooled:
            # why: with few labels the heads learn faster from the modalities' own summaries than from the CLS alone
            both = torch.stack([has[m] for m in pooled], 1).to(fused.dtype)  # (B, M)
            stacked = torch.stack(list(pooled.values()), 1)  # (B, M, W); absent rows are 0 (masked_mean)
            fused = fused + (stacked * both.unsqueeze(-1)).sum(1) / both.sum(1, keepdim=True).clamp(min=1)
        return {
            "fused": fused,
            "pooled": pooled,
            "unimodal": unimodal,
            "present": has,
            "attention": {m: v / total for m, v in share.items()},
        }
