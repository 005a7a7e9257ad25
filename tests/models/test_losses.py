"""Losses against values worked by hand."""

from __future__ import annotations

import math

import torch

from models.losses import cox_ph_loss, info_nce, masked_modality_loss


def test_cox_partial_likelihood_by_hand():
    risk = torch.tensor([0.0, 1.0, 2.0])
    time = torch.tensor([1.0, 2.0, 3.0])
    event = torch.tensor([1, 0, 1])
    # event at t=1: risk set {0,1,2}; event at t=3: risk set {2}
    expected = -((0.0 - math.log(1 + math.e + math.e**2)) + (2.0 - 2.0)) / 2
    assert math.isclose(cox_ph_loss(risk, time, event).item(), expected, rel_tol=1e-6)
    assert cox_ph_loss(risk, time, torch.zeros(3)).item() == 0.0


def test_info_nce_rewards_alignment_and_skips_unshared_patients():
    z = torch.randn(6, 8)
    both = {"a": torch.ones(6, dtype=torch.bool), "b": torch.ones(6, dtype=torch.bool)}
    aligned = info_nce({"a": z, "b": z}, both, temperature=0.05)
    shuffled = info_nce({"a": z, "b": z.flip(0)}, both, temperature=0.05)
    assert aligned < shuffled
    apart = {"a": torch.tensor([1, 1, 1, 0, 0, 0]).bool(), "b": torch.tensor([0, 0, 0, 1, 1, 1]).bool()}
    e = torch.randn(6, 8, requires_grad=True)
    loss = info_nce({"a": e, "b": e * 2}, apart)
    assert loss.item() == 0.0 and loss.requires_grad  # no patient has both: nothing to align


def test_masked_modality_loss_only_where_dropped():
    pred, target = torch.randn(4, 8), torch.randn(4, 8)
    target[0] = pred[0] * 3
    valid = torch.tensor([True, False, False, False])
    assert abs(masked_modality_loss(pred, target, valid).item()) < 1e-6
    assert masked_modality_loss(pred, target, torch.zeros(4, dtype=torch.bool)).item() == 0.0
