"""The whole model on every subset of modalities: shapes, masking (an absent modality changes nothing), the I/O
contract, the named configs, and that a few optimiser steps lower the loss."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from models.factory import create_model, list_models, model_config
from models.losses import cox_ph_loss
from models.model import MODALITIES, MultimodalModel
from tasks.validation.contracts import check_model_inputs
from tests.models.batch import B, make_batch

SUBSETS = [s for r in range(1, len(MODALITIES) + 1) for s in itertools.combinations(MODALITIES, r)]


@pytest.fixture(scope="module")
def model() -> MultimodalModel:
    torch.manual_seed(0)
    return create_model("tiny").eval()


def outputs(model, batch) -> dict:
    with torch.no_grad():
        return model(batch)


def assert_same(a: dict, b: dict) -> None:
    for k in ("fused", "class_probs", "binary_logit", "risk"):
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    for k in ("pooled", "unimodal", "attention"):
        assert a[k].keys() == b[k].keys()
        for m in a[k]:
            assert torch.allclose(a[k][m], b[k][m], atol=1e-5), (k, m)


def test_named_configs():
    assert {"tiny", "base"} <= set(list_models())
    assert model_config("base").fusion.width > model_config("tiny").fusion.width
    with pytest.raises(ValueError, match="unknown model config"):
        create_model("huge")


@pytest.mark.parametrize("subset", SUBSETS, ids=["+".join(s) for s in SUBSETS])
def test_every_subset_of_modalities(model, subset):
    batch = make_batch(subset)
    out = outputs(model, batch)
    w = model.config.fusion.width
    assert out["fused"].shape == (B, w) and torch.isfinite(out["fused"]).all()
    assert out["class_probs"].shape == (B, 4) and out["risk"].shape == (B,) and out["binary_logit"].shape == (B,)
    assert set(out["pooled"]) == {*subset, "demographics"} and all(v.shape == (B, w) for v in out["pooled"].values())
    share = torch.stack(list(out["attention"].values()), 1)  # (B, |subset|)
    assert torch.allclose(share.sum(1), torch.ones(B), atol=1e-5)
    assert check_model_inputs({**batch, "class_probs": out["class_probs"], "risk": out["risk"]}) == []


@pytest.mark.parametrize("modality", MODALITIES)
def test_an_absent_modality_changes_nothing(model, modality):
    """Samples 0 and 2 lack `modality`: scrambling (even NaN-filling) its input changes no output, and the result
    equals leaving the modality out of the batch altogether: masked, never zero-imputed."""
    batch = make_batch()
    batch["mask"][[0, 2], MODALITIES.index(modality)] = False
    ref = outputs(model, batch)
    scrambled = dict(batch)
    x = batch[modality].clone()
    x[[0, 2]] = float("nan") if x.is_floating_point() else torch.randint(1, 512, x[[0, 2]].shape)
    scrambled[modality] = x
    assert_same(ref, outputs(model, scrambled))
    assert (ref["attention"][modality][[0, 2]] == 0).all() and (ref["attention"][modality][[1, 3]] > 0).all()

    others = [m for m in MODALITIES if m != modality]
    alone = {k: v[[0, 2]] for k, v in batch.items() if k != modality}
    without = outputs(model, alone)  # the same two patients, the modality not in the batch at all
    for k in ("fused", "class_probs", "risk"):
        assert torch.allclose(ref[k][[0, 2]], without[k], atol=1e-5), k
    assert set(without["pooled"]) == {*others, "demographics"}


def test_modality_dropout_keeps_one_present_modality():
    torch.manual_seed(0)
    m = create_model("tiny").train()
    m.config.modality_dropout = 0.9
    present = {k: torch.tensor([True, False, True, False] * 8) for k in ("labs", "omics")}
    kept = torch.stack(list(m.modality_dropout(present).values()), 1)
    assert (kept.any(1) == torch.stack(list(present.values()), 1).any(1)).all()  # never all dropped
    assert not (kept & ~torch.stack(list(present.values()), 1)).any()  # never adds a missing modality
    m.eval()
    assert m.modality_dropout(present) is present


def supervised_loss(out: dict, y: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    return (F.cross_entropy(out["class_logits"], y) + cox_ph_loss(out["risk"], time, event)
            + F.binary_cross_entropy_with_logits(out["binary_logit"], event.float()))


@pytest.mark.slow  # trains
def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    model = create_model("tiny")
    batch = make_batch(b=8, seed=1)
    batch["mask"][::3, 3] = False  # some patients lack notes
    y, time = torch.arange(8) % 4, torch.arange(1.0, 9.0)
    event = torch.tensor([1, 0, 1, 1, 0, 1, 0, 1])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def total(train: bool) -> torch.Tensor:
        model.train(train)
        torch.manual_seed(1)  # the same dropped modalities for the before/after evaluation
        return supervised_loss(model(batch), y, time, event) + model.pretrain_losses(batch)["loss"]

    with torch.no_grad():
        before = total(False).item()
    for _ in range(15):
        opt.zero_grad()
        loss = total(True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = total(False).item()
    assert after < 0.8 * before, (before, after)


def test_lock_encoders_leaves_fusion_and_heads_trainable():
    model = create_model("tiny")
    model.lock_encoders()
    assert not any(p.requires_grad for p in model.encoders.parameters())
    assert all(p.requires_grad for p in model.fusion.parameters())
    assert all(p.requires_grad for p in model.multiclass.parameters())
    model.train()
    assert model.fusion.training and not any(enc.training for enc in model.encoders.values())
