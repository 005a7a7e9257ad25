"""The pretrain stage's work: train (or resume) the backbone, in this process or under torchrun, then publish
models/backbone/ and log it as the stage's MLflow run.

Checkpoints live under .mmfm/checkpoints/<run key>/ (tasks/stage/run.py run_key) with the tokenizer beside them.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import mlflow
import polars as pl
import torch

from models.encoders.concepts import ConceptReader, is_concept_dir
from models.encoders.text import load_tokenizer
from models.factory import model_config
from tasks import tags, tracking
from tasks.atomic import fresh_dir, replace_dir
from tasks.faults import kill_point
from tasks.stage.run import Attempt
from tasks.training.bundle import backbone_sha256, save_backbone
from tasks.training.curated_dataset import DatasetConfig, model_inputs
from tasks.training.ddp import failure_line, launch_torchrun, rendezvous_settings, save_split
from tasks.training.experts import fit_omics_basis
from tasks.training.fit import corpus_tokenizer, new_model, pretrain
from tasks.training.labs_vocab import DEFAULT_SIZE, LabsVocab, learn_from_curated
from tasks.training.loop import TrainConfig
from tasks.training.split_data import load_split
from tasks.validation.contracts import check_model_inputs
from tasks.versioning.dataset import DatasetVersion
from tasks.workspace import Workspace


def train_config(p: dict, objective: str):
    """A params.yaml section (pretrain, finetune) as the training loop's config."""
    return TrainConfig(steps=int(p["steps"]), lr=float(p["lr"]), weight_decay=float(p["weight_decay"]),
                       warmup_steps=int(p["warmup_steps"]), batch_size=int(p["batch_size"]), seed=int(p["seed"]),
                       checkpoint_every=int(p.get("checkpoint_every", 0)), objective=objective)


def omics_genes(ws: Workspace) -> list[str] | None:
    """The omics panel the backbone reads, in order (new extracts are aligned to it when scored)."""
    path = ws.curated / "omics_features.parquet"
    if not path.exists():
        return None
    frame = pl.read_parquet(path)
    return frame.sort("index")["feature"].to_list() if "feature" in frame.columns else None


def labs_vocabulary(ws: Workspace, p: dict) -> LabsVocab:
    """The labs vocabulary of the curated training split (K: pretrain.labs_vocab_size); the model config's reference
    ranges serve catalogue codes the catalogue gives none for (tasks/training/labs_vocab.py)."""
    labs = model_config(p["model"]).labs
    return learn_from_curated(ws.curated, int(p.get("labs_vocab_size", DEFAULT_SIZE)), split="train",
                              prior_reference=labs.reference if labs is not None else None)


def _checkpoint_tokenizer(path: Path, resume: bool):
    """The tokenizer saved with this run's checkpoints, when resuming one (None: train a new one)."""
    if not resume:
        return None
    if is_concept_dir(path):
        return ConceptReader.load(path)
    return load_tokenizer(path) if (path / "tokenizer.json").exists() else None


def train_backbone(ws: Workspace, p: dict, key: str, resume: bool) -> dict:
    """-> {model, tokenizer, losses, val_losses, best_step, counts, world_size}; under torchrun when p['nproc'] > 1."""
    cfg = train_config(p, "pretrain")
    vocab = labs_vocabulary(ws, p)
    config = DatasetConfig(labs_vocab=vocab)
    ckpt = ws.state / "checkpoints" / key
    tokenizer = _checkpoint_tokenizer(ckpt / "tokenizer", resume)
    if tokenizer is None and (tokenizer := corpus_tokenizer(ws.curated, "train", int(p["vocab_size"]),
                                                            config.max_text_length, p["model"])) is not None:
        # the token ids the checkpoints are trained with are kept beside them: training is deterministic
        # (models/encoders/text.py), but a tokenizers upgrade between a kill and its resume could still change them
        tokenizer.save_pretrained(str(ckpt / "tokenizer"))
    train, val = load_split(ws.curated, "train", tokenizer, config), load_split(ws.curated, "val", tokenizer, config)
    problems = check_model_inputs(model_inputs(train.take(range(min(64, len(train)))).tensors))
    if problems:
        raise ValueError(f"curated training data break data_contracts/model_io.yaml: {'; '.join(problems[:5])}")
    n_omics = train.tensors["omics"].shape[1] if "omics" in train.tensors else None
    model = new_model(p["model"], cfg.seed, n_omics, labs_vocab=vocab)
    rdzv = rendezvous_settings(p, default_id=key)  # every node with the same params and data derives the same id
    if int(p.get("nproc", 1)) > 1 or not rdzv.standalone:
        return _train_under_torchrun(model, train, cfg, ckpt / "ddp", int(p.get("nproc", 1)), rdzv, resume) \
            | {"tokenizer": tokenizer, "counts": train.counts(), "labs_vocab": vocab}
    trained = pretrain(model, train, cfg, checkpoint_dir=ckpt, resume=resume, val=val,
                       eval_every=int(p.get("eval_every", 0)))
    return {"model": trained.model, "tokenizer": tokenizer, "losses": trained.result.losses,
            "val_losses": trained.val_losses, "best_step": trained.best_step, "counts": train.counts(),
            "world_size": 1, "labs_vocab": vocab}


def _train_under_torchrun(model, train, cfg, work: Path, nproc: int, rdzv, resume: bool) -> dict:
    for stale in ("final.pt", "result.json"):  # written by global rank 0 only, which may run on another node
        (work / stale).unlink(missing_ok=True)
    save_split(train, work / "train.pt")
    (work / "config.json").write_text(json.dumps(asdict(model.config)))
    args = ["--steps", str(cfg.steps), "--out", str(work), "--batch-size", str(cfg.batch_size),
            "--lr", str(cfg.lr), "--weight-decay", str(cfg.weight_decay), "--warmup-steps", str(cfg.warmup_steps),
            "--seed", str(cfg.seed), "--checkpoint-every", str(cfg.checkpoint_every), "--objective", "pretrain",
            "--data", str(work / "train.pt"), "--model-config", str(work / "config.json"),
            *(["--resume"] if resume else [])]
    done = launch_torchrun(nproc, args, timeout=6 * 3600, rdzv=rdzv)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun with {nproc} ranks on {rdzv.nnodes} node(s) failed (rc {done.returncode}): "
                           f"{failure_line(done.stderr)}")
    if not (work / "result.json").exists():
        raise RuntimeError(f"torchrun run {rdzv.run_id} finished; global rank 0 ran on another node, whose "
                           "workspace holds the backbone: publish it from there (nothing to publish here)")
    model.load_state_dict(torch.load(work / "final.pt", weights_only=True))
    fit_omics_basis(model, train)  # the ranks train the networks; the basis is a closed form on the same profiles
    result = json.loads((work / "result.json").read_text())
    return {"model": model.eval(), "losses": result["losses"], "val_losses": {}, "best_step": None,
            "world_size": result["world_size"]}


def publish_backbone(ws: Workspace, p: dict, data: DatasetVersion, out: dict, attempt: Attempt) -> dict:
    """Publish models/backbone and log the stage's MLflow run (journaled by `attempt`); -> the stage's summary."""
    facts, backbone = data.facts(), ws.models / "backbone"
    run_tags = tracking.run_tags(ws.root, "pretrain", facts)
    with attempt.mlflow_run(f"pretrain-{p['model']}", run_tags) as run:
        meta = {"model": p["model"], "mlflow_run_id": run.info.run_id, **facts, "steps": len(out["losses"]),
                "omics_genes": omics_genes(ws), "labs_vocab": out["labs_vocab"].to_dict(),
                "best_step": out["best_step"], "world_size": out["world_size"], "training_data": out["counts"],
                "code_version": run_tags[tags.CODE_VERSION]}
        incoming = fresh_dir(backbone)
        save_backbone(incoming, out["model"], out["tokenizer"], meta)
        replace_dir(incoming, backbone)
        mlflow.log_params({k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in p.items()})
        tracking.log_curve(out["losses"], "train_loss")
        tracking.log_curve(out["val_losses"], "val_loss")
        mlflow.set_tag(tags.BACKBONE_SHA256, backbone_sha256(backbone))
        mlflow.log_artifacts(str(backbone), artifact_path="backbone")
        summary = {"model": p["model"], "steps": len(out["losses"]), "first_loss": out["losses"][0],
                   "final_loss": out["losses"][-1], "best_step": out["best_step"], "mlflow_run_id": run.info.run_id,
                   "dataset_version": data.name, "backbone": str(backbone)}
        attempt.finish(summary, outputs=[backbone])
    kill_point("pretrain.after_run")
    return summary
