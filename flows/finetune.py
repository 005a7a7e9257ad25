"""`mmfm finetune`: adapt the backbone to clinical tasks cheaply: frozen backbone + LoRA adapters (peft) on the
fusion and text attention projections + a small head per task (diagnosis: 4-class; risk: death within a year;
survival: Cox). `label_fraction` keeps a stratified share of the training labels for few-label studies.

The backbone comes from models/backbone/ (the pretrain stage's output) or from MLflow (`runs:/<id>/backbone` or a
registered `models:/<name>/<version>`); each adapter in models/finetuned/<task>/ names the sha256 of the backbone
weights it needs, and its MLflow run carries the backbone's run id, the dataset version and the code version.
One journal per task (tasks/stage/run.py): a rerun after a kill reuses the tasks that finished.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.run_names import run_name
from tasks import tracking
from tasks.atomic import fresh_dir, replace_dir
from tasks.stage.run import run_key, stage_run
from tasks.training import adapters
from tasks.training.bundle import backbone_sha256
from tasks.validation.curated_check import check_curated
from tasks.versioning.dataset import current
from tasks.workspace import Workspace


@task(name="finetune-task", cache_policy=NO_CACHE)
def finetune_task(ws: Workspace, backbone_dir: Path, task_name: str, p: dict, key: str, resume: bool) -> dict:
    return adapters.finetune_one(ws, backbone_dir, task_name, p, key, resume)


@flow(name="finetune", flow_run_name=run_name("finetune"))
def finetune_flow(workspace: Path, tasks: list[str] | None = None, label_fraction: float | None = None,
                  backbone: str | None = None, steps: int | None = None, resume: bool = True) -> dict:
    with stage_run(workspace, "finetune") as run:
        ws, log = run.ws, get_run_logger()
        check_curated(ws.root)  # refuse data changed since validate, before any training
        p = ws.section("finetune", tasks=tasks, label_fraction=label_fraction, steps=steps)
        adapters.check_tasks(p["tasks"])
        data = current(ws.root)
        results, incoming = {}, fresh_dir(ws.models / "finetuned")
        with tempfile.TemporaryDirectory(dir=ws.state) as scratch:
            backbone_dir = adapters.resolve_backbone(ws, backbone, Path(scratch))
            sha = backbone_sha256(backbone_dir)
            key = run_key("finetune", {**p, "backbone": sha}, data.curated_md5)
            attempts = {t: run.attempt(f"{key}-{t}", f"finetune-{t}", reuse=resume) for t in p["tasks"]}
            for task_name, attempt in attempts.items():
                if attempt.reused:  # finished by a run killed later: no second MLflow run
                    results[task_name] = adapters.reuse_adapter(attempt, incoming, task_name)
                    log.info("fine-tuned %s: kept from an interrupted run (MLflow run %s)", task_name,
                             results[task_name]["mlflow_run_id"])
                    continue
                out = finetune_task(ws, backbone_dir, task_name, p, key, resume)
                results[task_name] = adapters.log_adapter(ws, task_name, p, data, sha, out, incoming, attempt)
                log.info("fine-tuned %s: %d of %d parameters trained", task_name, out["trained"].trainable_params,
                         out["trained"].total_params)
        replace_dir(incoming, ws.models / "finetuned")
        for result in results.values():
            tracking.describe_run(result["mlflow_run_id"], params=p, facts=data.facts())
        event = run.record(inputs=[ws.curated, ws.models / "backbone"], outputs=[ws.models / "finetuned"], params=p,
                           facts={"dataset_version": data.name, "backbone_sha256": sha,
                                  "mlflow_run_ids": {t: r["mlflow_run_id"] for t, r in results.items()}},
                           fallback=key)
    return {"tasks": results, "label_fraction": p["label_fraction"], "backbone_sha256": sha,
            "dataset_version": data.name, "adapters": str(ws.models / "finetuned"), "lineage_event": event.event_id}


def run(workspace: Path) -> dict:
    return finetune_flow(workspace)


if __name__ == "__main__":  # `dvc repro` runs `python -m flows.finetune` in the workspace
    from tasks.settings import quiet_telemetry

    quiet_telemetry()
    print(json.dumps(run(Path.cwd()), default=str))
