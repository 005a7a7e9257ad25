"""`mmfm finetune`: adapt the backbone to clinical tasks cheaply: frozen backbone + LoRA adapters (peft) on the
fusion and text attention projections + a small head per task (diagnosis: 4-class; risk: death within a year;
survival: Cox). `label_fraction` keeps a stratified share of the training labels for few-label studies.

The backbone comes from models/backbone/ (the pretrain stage's output) or from MLflow (`runs:/<id>/backbone` or a
registered `models:/<name>/<version>`); each adapter in models/finetuned/<task>/ names the sha256 of the backbone
weights it needs, and its MLflow run carries the backbone's run id, the dataset version and the code version.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.pretrain import EXPERIMENT, replace_dir, run_key, train_config
from tasks.faults import kill_point
from tasks.run_journal import RunJournal
from tasks.validation.curated_check import check_curated
from tasks.workspace import Workspace
from tasks.workspace_lock import holds_workspace_lock

TASKS = ("diagnosis", "risk", "survival")
TARGET = {"diagnosis": "label", "risk": "risk_label", "survival": "event"}  # stratification column per task


def resolve_backbone(ws: Workspace, source: str | None, scratch: Path) -> Path:
    """A local backbone folder: the workspace's, or one downloaded from MLflow (runs:/ or models:/ URIs)."""
    if not source or source == "workspace":
        path = ws.models / "backbone"
        if not (path / "meta.json").exists():
            raise FileNotFoundError(f"{path}: no backbone: run `mmfm pretrain` first")
        return path
    import mlflow

    from tasks import tracking

    tracking.configure(ws.root)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(scratch)))
    for candidate in (local, local / "backbone", local / "artifacts" / "backbone"):
        if (candidate / "meta.json").exists() and (candidate / "weights.safetensors").exists():
            return candidate
    raise FileNotFoundError(f"{source}: no backbone folder (config.json, weights.safetensors, meta.json) in it")


@task(name="finetune-task", cache_policy=NO_CACHE)
def finetune_task(ws: Workspace, backbone_dir: Path, task_name: str, p: dict, key: str, resume: bool) -> dict:
    from tasks.training.bundle import LoraSettings, load_backbone
    from tasks.training.data import label_fraction, load_split
    from tasks.training.fit import finetune

    backbone, tokenizer, meta = load_backbone(backbone_dir)
    train, val = load_split(ws.curated, "train", tokenizer), load_split(ws.curated, "val", tokenizer)
    fraction = float(p["label_fraction"])
    if fraction < 1:
        train = train.take(label_fraction(train, fraction, int(p["seed"]), TARGET[task_name]))
    lora = LoraSettings(**{k: v for k, v in (p.get("lora") or {}).items() if k in ("r", "alpha", "dropout", "full")})
    trained = finetune(backbone, train, task_name, train_config(p, task_name), lora=lora,
                       checkpoint_dir=ws.state / "checkpoints" / f"{key}-{task_name}", resume=resume, val=val,
                       eval_every=int(p.get("eval_every", 0)))
    return {"trained": trained, "lora": lora, "backbone_meta": meta, "train_patients": len(train)}


@flow(name="finetune")
@holds_workspace_lock("mmfm finetune")
def finetune_flow(workspace: Path, tasks: list[str] | None = None, label_fraction: float | None = None,
                  backbone: str | None = None, steps: int | None = None, resume: bool = True) -> dict:
    import mlflow

    from tasks import tracking
    from tasks.lineage import record
    from tasks.training.bundle import backbone_sha256, save_adapter

    ws = Workspace(Path(workspace).resolve())
    check_curated(ws.root)  # refuse data changed since validate, before any training
    p = ws.section("finetune", tasks=tasks, label_fraction=label_fraction, steps=steps)
    unknown = sorted(set(p["tasks"]) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}")
    facts = tracking.dataset_facts(ws.root)
    log = get_run_logger()
    results, incoming = {}, ws.models / ".finetuned-incoming"
    shutil.rmtree(incoming, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=ws.state) as scratch:
        backbone_dir = resolve_backbone(ws, backbone, Path(scratch))
        sha = backbone_sha256(backbone_dir)
        key = run_key("finetune", {**p, "backbone": sha}, facts["curated_md5"])
        tracking.configure(ws.root)
        experiment = tracking.experiment_id(ws.root, EXPERIMENT)
        journals = {t: RunJournal(ws, f"finetune-{t}", "finetune", f"{key}-{t}") for t in p["tasks"]}
        for task_name in p["tasks"]:
            journal = journals[task_name]
            if done := journal.recover(reuse=resume):  # finished by a run killed later: no second MLflow run
                shutil.copytree(journal.kept, incoming / task_name)
                results[task_name] = done["result"]
                log.info("fine-tuned %s: kept from an interrupted run (MLflow run %s)", task_name,
                         results[task_name]["mlflow_run_id"])
                continue
            out = finetune_task(ws, backbone_dir, task_name, p, key, resume)
            trained, bmeta = out["trained"], out["backbone_meta"]
            tags = {**tracking.run_tags(ws.root, "finetune", facts), "mmfm.task": task_name,
                    "mmfm.backbone_run_id": str(bmeta.get("mlflow_run_id")), "mmfm.backbone_sha256": sha}
            with mlflow.start_run(experiment_id=experiment, run_name=f"finetune-{task_name}", tags=tags) as run:
                journal.start(run.info.run_id)
                kill_point("finetune.in_run")
                meta = {"mlflow_run_id": run.info.run_id, **facts, "label_fraction": p["label_fraction"],
                        "train_patients": out["train_patients"], "best_step": trained.best_step,
                        "trainable_params": trained.trainable_params, "total_params": trained.total_params,
                        "backbone": {"sha256": sha, "mlflow_run_id": bmeta.get("mlflow_run_id"),
                                     "uri": f"runs:/{bmeta.get('mlflow_run_id')}/backbone",
                                     "model": bmeta.get("model"), "dataset_version": bmeta.get("dataset_version")}}
                save_adapter(incoming / task_name, trained.model, task_name, out["lora"], meta)
                mlflow.log_params({"task": task_name, "label_fraction": p["label_fraction"], "steps": p["steps"],
                                   "lr": p["lr"], "lora": json.dumps(p.get("lora")), "backbone_sha256": sha,
                                   "trainable_params": trained.trainable_params})
                tracking.log_curve(trained.result.losses, "train_loss")
                tracking.log_curve(trained.val_losses, "val_loss")
                mlflow.log_artifacts(str(incoming / task_name), artifact_path="adapter")
                results[task_name] = {"mlflow_run_id": run.info.run_id, "final_loss": trained.result.losses[-1],
                                      "best_step": trained.best_step, "trainable_params": trained.trainable_params,
                                      "total_params": trained.total_params, "train_patients": out["train_patients"]}
                journal.finish(results[task_name], keep=incoming / task_name)  # kept until the ledger event
            log.info("fine-tuned %s: %d of %d parameters trained", task_name, trained.trainable_params,
                     trained.total_params)
    replace_dir(incoming, ws.models / "finetuned")
    event = record(ws, "finetune", str(flow_run.id or key), inputs=[ws.curated, ws.models / "backbone"],
                   outputs=[ws.models / "finetuned"], params=p,
                   facts={"dataset_version": facts["dataset_version"], "backbone_sha256": sha,
                          "mlflow_run_ids": {t: r["mlflow_run_id"] for t, r in results.items()}})
    for journal in journals.values():  # recorded: a later run of this stage trains (and logs) anew
        journal.clear()
    return {"tasks": results, "label_fraction": p["label_fraction"], "backbone_sha256": sha,
            "dataset_version": facts["dataset_version"], "adapters": str(ws.models / "finetuned"),
            "lineage_event": event.event_id}


def run(workspace: Path) -> dict:
    return finetune_flow(workspace)


if __name__ == "__main__":  # `dvc repro` runs `python -m flows.finetune` in the workspace
    from tasks.settings import quiet_telemetry

    quiet_telemetry()
    print(json.dumps(run(Path.cwd()), default=str))
