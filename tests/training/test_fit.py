"""Training recipes on a real curated split: batches, validation-based selection, LoRA, model folders offline."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tasks.training.bundle import BundleError, LoraSettings, load_adapter, load_backbone, save_adapter, save_backbone
from tasks.training.experts import ExpertSettings
from tasks.training.fit import corpus_tokenizer, finetune, from_scratch, new_model, predict, pretrain
from tasks.training.loop import TrainConfig
from tasks.training.split_data import EpochBatches, label_fraction, load_split, risk_labels


@pytest.fixture(scope="module")
def split(workspace):
    """Every patient, notes read as concept flags (the tiny config: experts then fusion)."""
    ws, _ = workspace
    tokenizer = corpus_tokenizer(ws.curated, "train", vocab_size=256, max_length=64, model="tiny")
    data = load_split(ws.curated, None, tokenizer)
    return data, tokenizer


@pytest.fixture(scope="module")
def token_split(workspace):
    """Every patient, notes as WordPiece ids (the tiny-fusion config, where LoRA applies)."""
    ws, _ = workspace
    tokenizer = corpus_tokenizer(ws.curated, "train", vocab_size=256, max_length=64)
    return load_split(ws.curated, None, tokenizer), tokenizer


def _model(data, name: str = "tiny"):
    return new_model(name, 0, data.tensors["omics"].shape[1] if "omics" in data.tensors else None)


QUICK = ExpertSettings(prior_steps=3, interaction_steps=2, min_val_patients=1, eval_every=2)


def test_split_tensors_follow_the_model_contract(split):
    from tasks.training.curated_dataset import model_inputs
    from tasks.validation.contracts import check_model_inputs

    data, _ = split
    assert len(data) == 12 and data.tensors["mask"].shape == (12, 5)
    assert check_model_inputs(model_inputs(data.tensors)) == []
    assert data.counts()["patients"] == 12 and sum(data.counts()["site"].values()) == 12


def test_risk_label_is_death_within_a_year_and_unknown_when_censored_before():
    time = torch.tensor([100.0, 100.0, 400.0, 400.0])
    event = torch.tensor([True, False, True, False])
    label = risk_labels(time, event)
    assert label[0] == 1 and torch.isnan(label[1]) and label[2] == 0 and label[3] == 0


def test_batches_are_a_function_of_the_step_and_an_epoch_sees_everyone(split):
    data, _ = split
    a, b = EpochBatches(data, 4, seed=3), EpochBatches(data, 4, seed=3)
    assert torch.equal(a(5)["labs"], b(5)["labs"])
    ids = torch.cat([a(s)["time"] for s in range(3)])  # 3 steps x 4 = one epoch of 12
    assert sorted(ids.tolist()) == sorted(data.tensors["time"].tolist())


def test_label_fraction_keeps_every_class(split):
    data, _ = split
    idx = label_fraction(data, 0.1, seed=0)
    labels = data.tensors["label"].numpy()
    assert set(labels[idx]) == set(labels[labels >= 0])


@pytest.mark.slow  # trains twice
def test_validation_selection_never_changes_the_training_run(split):
    data, _ = split
    cfg = TrainConfig(steps=4, lr=3e-3, warmup_steps=1, batch_size=4, objective="diagnosis")
    plain = from_scratch(_model(data), data, "diagnosis", cfg, experts=QUICK)
    watched = from_scratch(_model(data), data, "diagnosis", cfg, val=data, eval_every=2, experts=QUICK)
    first = QUICK.prior_steps  # the first phase: selection then restores its best weights, so later phases differ
    assert plain.result.losses[:first] == watched.result.losses[:first]
    names = [p.name for p in watched.phases]
    assert names[0] == "prior" and names[-1] == "interaction" and "expert-labs" in names
    assert watched.phases[0].best_step is None  # the prior trains a fixed number of steps
    assert watched.val_losses and all(p.best_step in (0, 2, 4) for p in watched.phases[1:] if not p.skipped)


def test_experts_phases_train_their_own_parts_and_missing_modalities_drop_out(split):
    """Each expert learns on top of the prior; a patient's output is the prior plus the experts of the modalities
    it has (plus the interaction): removing a modality removes exactly its expert's evidence."""
    data, _ = split
    cfg = TrainConfig(steps=4, lr=1e-2, warmup_steps=1, batch_size=4)
    tuned = from_scratch(_model(data), data, "diagnosis", cfg, experts=QUICK)
    preds = predict(tuned.model, data)
    assert {f"evidence_{m}" for m in ("demographics", "labs", "notes", "omics")} <= set(preds)
    has_labs = preds["present_labs"]
    assert (np.abs(preds["evidence_labs"][~has_labs]) == 0).all() and np.abs(preds["evidence_labs"][has_labs]).sum()
    model = tuned.model
    model.interaction = False  # the experts' sum alone
    alone = predict(model, data.without("labs"))
    both = predict(model, data)
    logit = np.log(both["class_probs"]) - np.log(alone["class_probs"])  # softmax shifts: compare centred logits
    gap = (logit - logit.mean(1, keepdims=True)) - (preds["evidence_labs"] - preds["evidence_labs"].mean(1,
                                                                                                     keepdims=True))
    assert np.abs(gap).max() < 1e-4



@pytest.mark.slow  # trains
def test_pretraining_loss_falls_on_the_curated_cohort(split):
    data, _ = split
    cfg = TrainConfig(steps=30, lr=3e-3, warmup_steps=2, batch_size=12)
    trained = pretrain(_model(data), data, cfg)
    assert np.mean(trained.result.losses[-5:]) < np.mean(trained.result.losses[:5])


def test_lora_trains_only_adapters_and_the_task_head(token_split):
    data, _ = token_split
    backbone = _model(data, "tiny-fusion")
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    tuned = finetune(backbone, data, "diagnosis", TrainConfig(steps=3, lr=1e-2, warmup_steps=1, batch_size=4))
    after = {k.replace(".base_layer", ""): v for k, v in tuned.model.state_dict().items()}  # peft wraps the layers
    # peft's LoRA on nn.MultiheadAttention merges and unmerges the frozen weights each forward: float round-off
    # (~1e-8) is all they may move
    changed = {k for k, v in after.items() if k not in before or not torch.allclose(before[k], v, atol=1e-6)}
    assert changed and all("lora_" in k or k.startswith("multiclass.") for k in changed), sorted(changed)[:5]
    assert any("fusion" in k for k in changed)  # tiny's notes encoder is a GRU: no attention projections to adapt
    assert tuned.trainable_params < 0.05 * tuned.total_params


def test_full_fine_tuning_trains_everything_and_round_trips(split, tmp_path):
    from tasks.training.bundle import backbone_sha256

    data, tokenizer = split
    backbone = _model(data)
    save_backbone(tmp_path / "backbone", backbone, tokenizer, {"model": "tiny"})
    tuned = finetune(copy.deepcopy(backbone), data, "diagnosis", TrainConfig(steps=2, lr=1e-2, warmup_steps=1),
                     lora=LoraSettings(full=True), recipe="full")
    assert tuned.trainable_params == tuned.total_params
    save_adapter(tmp_path / "dx", tuned.model, "diagnosis", LoraSettings(full=True),
                 {"backbone": {"sha256": backbone_sha256(tmp_path / "backbone")}})
    loaded, _, _ = load_adapter(tmp_path / "dx", tmp_path / "backbone")
    assert np.allclose(predict(loaded, data)["class_probs"], predict(tuned.model, data)["class_probs"], atol=1e-6)


def test_backbone_and_adapter_round_trip_offline_and_refuse_another_backbone(split, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data, tokenizer = split
    backbone = _model(data)
    save_backbone(tmp_path / "backbone", backbone, tokenizer, {"model": "tiny"})
    tuned = finetune(copy.deepcopy(backbone), data, "risk", TrainConfig(steps=2, lr=1e-2, warmup_steps=1),
                     experts=QUICK)  # the experts recipe: the bundle holds the whole model
    from tasks.training.bundle import backbone_sha256

    save_adapter(tmp_path / "risk", tuned.model, "risk", LoraSettings(full=True),
                 {"backbone": {"sha256": backbone_sha256(tmp_path / "backbone")}})
    loaded, tok2, meta = load_adapter(tmp_path / "risk", tmp_path / "backbone")
    note = ["Denies fever. Productive cough and SOB."]
    assert meta["task"] == "risk" and torch.equal(tok2.features(note), tokenizer.features(note))
    assert np.allclose(predict(loaded, data)["risk_prob"], predict(tuned.model, data)["risk_prob"], atol=1e-6)

    other = _model(data)
    torch.nn.init.normal_(other.multiclass.net[0].weight)
    save_backbone(tmp_path / "other", other, tokenizer, {"model": "tiny"})
    with pytest.raises(BundleError, match="sha256"):
        load_adapter(tmp_path / "risk", tmp_path / "other")
    reloaded, _, _ = load_backbone(tmp_path / "backbone")
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), backbone.state_dict().values(),
                                                 strict=True))
