"""Training recipes on curated splits: pre-train a backbone, fine-tune a task (experts then fusion, or LoRA / full
fine-tuning of the fusion read-out), train a model from scratch, and run a trained model over a split. Flows call
these; they know nothing of Prefect or MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.encoders.concepts import ConceptReader
from models.encoders.text import train_tokenizer
from models.factory import model_config
from models.model import MODALITIES, MultimodalModel
from tasks.training.bundle import LoraSettings, add_lora
from tasks.training.curated_dataset import CuratedDataset
from tasks.training.experts import ExpertSettings, fit_omics_basis, fit_task
from tasks.training.labs_vocab import LabsVocab
from tasks.training.loop import Hooks, TrainConfig, TrainResult, supervised_loss, train
from tasks.training.split_data import EpochBatches, SplitData


@dataclass
class Trained:
    model: MultimodalModel
    result: TrainResult
    trainable_params: int
    total_params: int
    val_losses: dict[int, float] = field(default_factory=dict)  # step -> validation loss
    best_step: int | None = None  # the step whose weights were kept (None: the last)
    phases: list = field(default_factory=list)  # experts recipe: one PhaseReport per phase


class Selector:
    """Validation every `every` steps; keeps the weights of the lowest validation loss (early stopping without
    stopping: the schedule runs to the end, the best state is restored after). Validation runs under a forked RNG
    so it never changes the training run (resume stays exact)."""

    def __init__(self, val: SplitData, objective: str, every: int, batch_size: int = 128):
        self.val, self.objective, self.every, self.batch_size = val, objective, every, batch_size
        self.losses: dict[int, float] = {}
        self.best: tuple[float, int, dict] | None = None

    @torch.no_grad()
    def loss(self, model: torch.nn.Module) -> float:
        was_training = model.training
        model.eval()
        with torch.random.fork_rng(devices=[]):
            if self.objective == "pretrain":
                total = [float(model.pretrain_losses(b)["loss"]) for b in self.val.batches(self.batch_size)]
                value = float(np.mean(total))
            else:  # one pass: the Cox loss needs every risk set together
                out = model(self.val.tensors)
                value = float(supervised_loss(self.objective, out, self.val.tensors))
        model.train(was_training)
        return value

    def __call__(self, step: int, model: torch.nn.Module) -> None:
        if step % self.every:
            return
        value = self.losses[step] = self.loss(model)
        if self.best is None or value < self.best[0]:
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.best = (value, step, state)

    def restore(self, model: torch.nn.Module) -> int | None:
        if self.best is None:
            return None
        model.load_state_dict(self.best[2])
        return self.best[1]


def corpus_tokenizer(curated: Path, split: str, vocab_size: int, max_length: int, model: str | None = None) -> Any:
    """What turns notes into the model's `notes` input: the clinical-concept reader when the named model reads
    concepts, else a WordPiece tokenizer trained on the notes of `split` only (never on test notes)."""
    if model is not None and model_config(model).notes_concepts is not None:
        return ConceptReader.from_lexicon()
    dataset = CuratedDataset(curated, split=split)
    texts = [t for frame in dataset.notes.values() for t in frame["text"].to_list() if t]
    if not texts:
        return None
    return train_tokenizer(texts, vocab_size=vocab_size, max_length=max_length)


def new_model(name: str, seed: int, n_omics: int | None = None, labs_vocab: LabsVocab | None = None) -> MultimodalModel:
    """A model from a named config; the omics width follows the curated gene panel when it differs, the labs
    encoder's codes and reference ranges the vocabulary learned from the training split (saved in the config)."""
    config = model_config(name)
    if n_omics and config.omics is not None and config.omics.n_features != n_omics:
        config.omics = replace(config.omics, n_features=n_omics)
    if labs_vocab is not None and config.labs is not None:
        config.labs = replace(config.labs, n_codes=len(labs_vocab.codes), codes=list(labs_vocab.codes),
                              reference=[list(r) for r in labs_vocab.reference])
    torch.manual_seed(seed)
    return MultimodalModel(config)


def _count(model: torch.nn.Module) -> tuple[int, int]:
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def _fit(model: MultimodalModel, data: SplitData, cfg: TrainConfig, checkpoint_dir: Path | None,
         resume: bool, val: SplitData | None = None, eval_every: int = 0) -> Trained:
    batches = EpochBatches(data, cfg.batch_size, cfg.seed)
    selector = Selector(val, cfg.objective, eval_every) if val is not None and eval_every > 0 else None
    hooks = Hooks(after_step=selector) if selector is not None else None
    result = train(model, batches, cfg, checkpoint_dir=checkpoint_dir, resume=resume, hooks=hooks)
    best = selector.restore(model) if selector is not None else None
    return Trained(model.eval(), result, *_count(model), val_losses=selector.losses if selector else {},
                   best_step=best)


def pretrained_encoders(model: MultimodalModel) -> tuple[str, ...]:
    """The encoders pre-training trains without outcome labels (fine-tuning locks them): the image encoders with
    report-finding heads."""
    return tuple(m for m in model.findings_heads if m in model.encoders)


def pretrain(model: MultimodalModel, data: SplitData, cfg: TrainConfig, checkpoint_dir: Path | None = None,
             resume: bool = False, val: SplitData | None = None, eval_every: int = 0) -> Trained:
    """Self-supervised, no outcome label read: the low-rank omics basis on every profile, then the configured
    objectives (report findings for the image encoders; InfoNCE + masked-modality modelling when `contrastive`)."""
    fit_omics_basis(model, data)
    return _fit(model, data, replace(cfg, objective="pretrain"), checkpoint_dir, resume, val, eval_every)


RECIPES = ("experts", "lora", "full")


def finetune(backbone: MultimodalModel, data: SplitData, task: str, cfg: TrainConfig,
             lora: LoraSettings | None = None, checkpoint_dir: Path | None = None, resume: bool = False,
             val: SplitData | None = None, eval_every: int = 0, recipe: str | None = None,
             experts: ExpertSettings | None = None) -> Trained:
    """Fine-tune `backbone` on one task. Recipes: "experts" (the default for the experts read-out: experts then
    fusion, tasks/training/experts.py, pre-trained encoders locked); "lora" (frozen, locked backbone + LoRA adapters
    + the task's head, peft); "full" (every parameter)."""
    recipe = recipe or ("experts" if backbone.experts else "full" if (lora and lora.full) else "lora")
    if recipe not in RECIPES:
        raise ValueError(f"unknown fine-tuning recipe {recipe!r}; known: {', '.join(RECIPES)}")
    if recipe == "experts":
        return _fit_experts(backbone, data, task, cfg, val, experts, pretrained_encoders(backbone),
                            checkpoint_dir, resume, eval_every)
    settings = replace(lora or LoraSettings(), full=recipe == "full")
    model = add_lora(backbone, task, settings)
    return _fit(model, data, replace(cfg, objective=task), checkpoint_dir, resume, val, eval_every)


def from_scratch(model: MultimodalModel, data: SplitData, task: str, cfg: TrainConfig,
                 checkpoint_dir: Path | None = None, val: SplitData | None = None, eval_every: int = 0,
                 experts: ExpertSettings | None = None) -> Trained:
    """Every parameter trained on the task's labels alone: the baseline that pre-training must beat (the experts
    read-out trains its phases, with nothing locked)."""
    if model.experts:
        return _fit_experts(model, data, task, cfg, val, experts, (), checkpoint_dir, False, eval_every)
    return _fit(model, data, replace(cfg, objective=task), checkpoint_dir, False, val, eval_every)


def _fit_experts(model: MultimodalModel, data: SplitData, task: str, cfg: TrainConfig, val: SplitData | None,
                 experts: ExpertSettings | None, frozen: tuple[str, ...], checkpoint_dir: Path | None, resume: bool,
                 eval_every: int) -> Trained:
    settings = experts or ExpertSettings()
    if eval_every:
        settings = replace(settings, eval_every=eval_every)
    done = fit_task(model, data, val, task, cfg, settings, frozen, checkpoint_dir, resume)
    trained = sum(p.trainable_params for p in done.phases)
    kept = [p.best_step for p in done.phases if p.best_step is not None]
    return Trained(model.eval(), TrainResult(losses=done.losses, step=len(done.losses)), trained,
                   sum(p.numel() for p in model.parameters()), val_losses=done.val_losses,
                   best_step=kept[-1] if kept else None, phases=done.phases)


@torch.no_grad()
def predict(model: MultimodalModel, data: SplitData, batch_size: int = 64) -> dict[str, np.ndarray]:
    """class_probs (N, C), risk_prob (N,), log_risk (N,), fused (N, W), unimodal_<m> (N, W), present_<m> (N,),
    attention_<m> (N,): the per-modality share of the fusion's CLS attention."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}

    def put(key: str, value: torch.Tensor) -> None:
        value = value.detach().cpu()
        parts.setdefault(key, []).append((value if value.dtype == torch.bool else value.float()).numpy())

    for batch in data.batches(batch_size):
        out = model(batch)
        put("class_probs", out["class_probs"])
        put("risk_prob", torch.sigmoid(out["binary_logit"]))
        put("log_risk", out["risk"])
        put("fused", out["fused"])
        n = out["fused"].shape[0]
        if model.experts:  # each expert's class evidence (0 where the patient lacks its input)
            for m in model.inputs:
                put(f"evidence_{m}", out["evidence"].get(m, torch.zeros_like(out["class_logits"])))
        for m in MODALITIES:
            if m not in model.modalities:
                continue
            present = out["present"].get(m, torch.zeros(n, dtype=torch.bool))
            put(f"present_{m}", present)
            put(f"unimodal_{m}", out["unimodal"].get(m, torch.zeros_like(out["fused"])))
            put(f"attention_{m}", out["attention"].get(m, torch.zeros(n)))
    return {k: np.concatenate(v) for k, v in parts.items()}
