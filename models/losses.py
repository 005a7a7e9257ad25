"""Pre-training and fine-tuning losses: pairwise InfoNCE across present modalities, masked-modality modelling,
Cox partial likelihood (Breslow ties)."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F


def info_nce(embeddings: dict[str, torch.Tensor], present: dict[str, torch.Tensor],
             temperature: float = 0.1) -> torch.Tensor:
    """CLIP-style symmetric InfoNCE for every pair of modalities, on the patients that have both.

    embeddings: modality -> (B, W); present: modality -> (B,) bool. Pairs with fewer than two shared patients are
    skipped; with no usable pair the loss is a graph-connected zero.
    """
    losses = []
    for a, b in itertools.combinations(sorted(embeddings), 2):
        both = present[a] & present[b]  # (B,)
        if int(both.sum()) < 2:
            continue
        za = F.normalize(embeddings[a][both], dim=-1)  # (N, W)
        zb = F.normalize(embeddings[b][both], dim=-1)
        logits = za @ zb.T / temperature  # (N, N): the diagonal pairs one patient's two modalities
        target = torch.arange(logits.shape[0], device=logits.device)
        losses.append((F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2)
    if not losses:
        return sum(e.sum() for e in embeddings.values()) * 0.0
    return torch.stack(losses).mean()


def masked_modality_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """1 - cosine(pred, stop-grad target), averaged over samples where a modality was dropped. (B, W), (B, W), (B,)."""
    if not bool(valid.any()):
        return pred.sum() * 0.0
    cos = F.cosine_similarity(pred[valid], target[valid].detach(), dim=-1)
    return (1 - cos).mean()


def cox_ph_loss(risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Negative Cox partial log-likelihood per event. risk (B,) log-risk, time (B,), event (B,) 1 = event observed.

    Risk set of an event at t: everyone with time >= t (Breslow handling of ties).
    """
    event = event.bool()
    if not bool(event.any()):
        return risk.sum() * 0.0
    at_risk = time.unsqueeze(0) >= time.unsqueeze(1)  # (B, B): row i = risk set of sample i
    log_denom = torch.logsumexp(risk.unsqueeze(0).masked_fill(~at_risk, float("-inf")), dim=1)  # (B,)
    return -(risk - log_denom)[event].mean()


def findings_loss(logits: torch.Tensor, target: torch.Tensor, levels: list[int]) -> torch.Tensor:
    """Mean cross-entropy over findings. logits (B, sum(levels)): each finding's levels side by side; target (B, F)
    int64 level per finding, -1 = not reported (ignored). A batch with no reported finding gives a connected 0."""
    losses, start = [], 0
    for j, n in enumerate(levels):
        t = target[:, j]
        if bool((t >= 0).any()):
            losses.append(F.cross_entropy(logits[:, start:start + n].float(), t, ignore_index=-1))
        start += n
    return torch.stack(losses).mean() if losses else logits.sum() * 0.0
