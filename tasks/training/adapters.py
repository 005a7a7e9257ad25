"""The finetune stage's work: one adapter + head per clinical task on a frozen backbone, each logged as its own
MLflow run (journaled per task: tasks/stage/run.py) and published together as models/finetuned/<task>/.

The backbone comes from models/backbone/ or from MLflow (`runs:/<id>/backbone`, `models:/<name>/<version>`); each
adapter names the sha256 of the backbone weights it needs.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import mlflow

from tasks import tags, tracking
from tasks.faults import kill_point
from tasks.stage.run import Attempt
from tasks.training.backbone import train_config
from tasks.training.bundle import LoraSettings, load_backbone, save_adapter
from tasks.training.curated_dataset import dataset_config
from tasks.training.experts import expert_settings
from tasks.training.fit import finetune
from tasks.training.split_data import label_fraction, load_split
from tasks.versioning.dataset import DatasetVersion
from tasks.workspace import Workspace

TASKS = ("diagnosis", "risk", "survival")
TARGET = {"diagnosis": "label", "risk": "risk_label", "survival": "event"}  # stratification column per task


def check_tasks(names: list[str]) -> None:
    unknown = sorted(set(names) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}")


def resolve_backbone(ws: Workspace, source: str | None, scratch: Path) -> Path:
    """A local backbone folder: the workspace's, or one downloaded from MLflow (runs:/ or models:/ URIs)."""
    if not source or source == "workspace":
        path = ws.models / "backbone"
        if not (path / "meta.json").exists():
            raise FileNotFoundError(f"{path}: no backbone: run `mmfm pretrain` first")
        return path
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(scratch)))
    for candidate in (local, local / "backbone", local / "artifacts" / "backbone"):
        if (candidate / "meta.json").exists() and (candidate / "weights.safetensors").exists():
            return candidate
    raise FileNotFoundError(f"{source}: no backbone folder (config.json, weights.safetensors, meta.json) in it")


def finetune_one(ws: Workspace, backbone_dir: Path, task_name: str, p: dict, key: str, resume: bool) -> dict:
    """Train one task's adapter and head; -> {trained, lora, backbone_meta, train_patients}."""
    backbone, tokenizer, meta = load_backbone(backbone_dir)
    train, val = (load_split(ws.curated, s, tokenizer, dataset_config(meta)) for s in ("train", "val"))
    fraction = float(p["label_fraction"])
    if fraction < 1:
        train = train.take(label_fraction(train, fraction, int(p["seed"]), TARGET[task_name]))
    lora = LoraSettings(**{k: v for k, v in (p.get("lora") or {}).items() if k in ("r", "alpha", "dropout", "full")})
    recipe = p.get("recipe") or ("experts" if backbone.experts else "full" if lora.full else "lora")
    if recipe in ("experts", "full"):
        lora = replace(lora, full=True)  # the bundle holds the whole fine-tuned model
    trained = finetune(backbone, train, task_name, train_config(p, task_name), lora=lora,
                       checkpoint_dir=ws.state / "checkpoints" / f"{key}-{task_name}", resume=resume, val=val,
                       eval_every=int(p.get("eval_every", 0)), recipe=recipe,
                       experts=expert_settings(p.get("experts") or {}))
    return {"trained": trained, "lora": lora, "recipe": recipe, "backbone_meta": meta, "train_patients": len(train)}


def reuse_adapter(attempt: Attempt, incoming: Path, task_name: str) -> dict:
    """A task finished by a killed run: its adapter back from the journal; -> its result."""
    shutil.copytree(attempt.kept, incoming / task_name)
    return attempt.result


def log_adapter(ws: Workspace, task_name: str, p: dict, data: DatasetVersion, sha: str, out: dict, incoming: Path,
                attempt: Attempt) -> dict:
    """Save the task's adapter into `incoming` and log its MLflow run (journaled by `attempt`); -> its result."""
    trained, bmeta, facts = out["trained"], out["backbone_meta"], data.facts()
    run_tags = {**tracking.run_tags(ws.root, "finetune", facts), tags.TASK: task_name,
                tags.BACKBONE_RUN_ID: str(bmeta.get("mlflow_run_id")), tags.BACKBONE_SHA256: sha}
    with attempt.mlflow_run(f"finetune-{task_name}", run_tags) as run:
        kill_point("finetune.in_run")
        meta = {"mlflow_run_id": run.info.run_id, **facts, "label_fraction": p["label_fraction"],
                "train_patients": out["train_patients"], "best_step": trained.best_step,
                "recipe": out["recipe"], "phases": [asdict(ph) for ph in trained.phases],
                "trainable_params": trained.trainable_params, "total_params": trained.total_params,
                "backbone": {"sha256": sha, "mlflow_run_id": bmeta.get("mlflow_run_id"),
                             "uri": f"runs:/{bmeta.get('mlflow_run_id')}/backbone",
                             "model": bmeta.get("model"), "dataset_version": bmeta.get("dataset_version")}}
        save_adapter(incoming / task_name, trained.model, task_name, out["lora"], meta)
        mlflow.log_params({"task": task_name, "recipe": out["recipe"], "label_fraction": p["label_fraction"],
                           "steps": p["steps"],
                           "lr": p["lr"], "lora": json.dumps(p.get("lora")), "backbone_sha256": sha,
                           "trainable_params": trained.trainable_params})
        tracking.log_curve(trained.result.losses, "train_loss")
        tracking.log_curve(trained.val_losses, "val_loss")
        mlflow.log_artifacts(str(incoming / task_name), artifact_path="adapter")
        result = {"mlflow_run_id": run.info.run_id, "final_loss": trained.result.losses[-1],
                  "best_step": trained.best_step, "trainable_params": trained.trainable_params,
                  "total_params": trained.total_params, "train_patients": out["train_patients"]}
        attempt.finish(result, keep=incoming / task_name)  # kept until the ledger event
    return result
