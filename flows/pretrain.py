"""`mmfm pretrain`: one backbone for every patient, self-supervised on the curated training split.

Reads data/curated (train split; val for model selection), trains a WordPiece tokenizer on the training notes,
pre-trains the named architecture (InfoNCE between every pair of modalities a patient has + masked-modality
modelling + modality dropout) in this process or under `torchrun` with `nproc` ranks (gloo on CPU, nccl on GPUs),
and writes models/backbone/ (tasks.training.bundle). The MLflow run carries the losses, the parameters, the dataset
version and the code version, with the backbone as its artifact; the ledger gets a `pretrain` event.
A killed run resumes from its last checkpoint (.mmfm/checkpoints/<run key>/) with the same loss curve; a run killed
after its MLflow run and before its ledger event is recorded, not trained again (tasks/stage/run.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.run_names import run_name
from tasks import tracking
from tasks.stage.run import run_key, stage_run
from tasks.training import backbone
from tasks.validation.curated_check import check_curated
from tasks.versioning.dataset import current
from tasks.workspace import Workspace


@task(name="train-backbone", cache_policy=NO_CACHE)
def train_backbone(ws: Workspace, p: dict, key: str, resume: bool) -> dict:
    return backbone.train_backbone(ws, p, key, resume)


@flow(name="pretrain", flow_run_name=run_name("pretrain"))
def pretrain_flow(workspace: Path, model: str | None = None, steps: int | None = None, nproc: int | None = None,
                  resume: bool = True) -> dict:
    with stage_run(workspace, "pretrain") as run:
        ws, log = run.ws, get_run_logger()
        check_curated(ws.root)  # refuse data changed since validate, before any training
        p = ws.section("pretrain", model=model, steps=steps, nproc=nproc)
        data = current(ws.root)
        attempt = run.attempt(run_key("pretrain", p, data.curated_md5), reuse=resume)
        if attempt.reused:  # finished and logged by a run killed before its ledger event: record it, train nothing
            summary = attempt.result
            log.info("pre-trained %s: kept from an interrupted run (MLflow run %s)", p["model"],
                     summary["mlflow_run_id"])
        else:
            out = train_backbone(ws, p, attempt.key, resume)
            summary = backbone.publish_backbone(ws, p, data, out, attempt)
        tracking.describe_run(summary["mlflow_run_id"], params=p, facts=data.facts())
        event = run.record(inputs=[ws.curated], outputs=[ws.models / "backbone"], params=p,
                           facts={"mlflow_run_id": summary["mlflow_run_id"], "dataset_version": data.name,
                                  "steps": summary["steps"], "final_loss": round(summary["final_loss"], 5)})
    log.info("pre-trained %s for %d steps: loss %.4f -> %.4f", p["model"], summary["steps"], summary["first_loss"],
             summary["final_loss"])
    return {**summary, "lineage_event": event.event_id}


def run(workspace: Path) -> dict:
    return pretrain_flow(workspace)


if __name__ == "__main__":  # `dvc repro` runs `python -m flows.pretrain` in the workspace
    from tasks.settings import quiet_telemetry

    quiet_telemetry()
    print(json.dumps(run(Path.cwd()), default=str))
