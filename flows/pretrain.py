"""`mmfm pretrain`: one backbone for every patient, self-supervised on the curated training split.

Reads data/curated (train split; val for model selection), trains a WordPiece tokenizer on the training notes,
pre-trains the named architecture (InfoNCE between every pair of modalities a patient has + masked-modality
modelling + modality dropout) in this process or under `torchrun` with `nproc` ranks (gloo on CPU, nccl on GPUs),
and writes models/backbone/ (tasks.training.bundle). The MLflow run carries the losses, the parameters, the dataset
version and the code version, with the backbone as its artifact; the ledger gets a `pretrain` event.
A killed run resumes from its last checkpoint (.mmfm/checkpoints/<run key>/) with the same loss curve.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from tasks.faults import kill_point
from tasks.run_journal import RunJournal
from tasks.validation.curated_check import check_curated
from tasks.workspace import Workspace
from tasks.workspace_lock import holds_workspace_lock

EXPERIMENT = "mmfm"


def train_config(p: dict, objective: str):
    from tasks.training.loop import TrainConfig

    return TrainConfig(steps=int(p["steps"]), lr=float(p["lr"]), weight_decay=float(p["weight_decay"]),
                       warmup_steps=int(p["warmup_steps"]), batch_size=int(p["batch_size"]), seed=int(p["seed"]),
                       checkpoint_every=int(p.get("checkpoint_every", 0)), objective=objective)


def run_key(stage: str, params: dict, curated_md5: str) -> str:
    """Checkpoints belong to one (stage, parameters, data) triple: a changed input never resumes a stale run."""
    text = json.dumps({"stage": stage, "params": params, "data": curated_md5}, sort_keys=True)
    return f"{stage}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def replace_dir(src: Path, dst: Path) -> None:
    """Swap a freshly written folder in: readers see the old one or the new one, never half of each."""
    old = dst.with_name(f".{dst.name}-previous")
    shutil.rmtree(old, ignore_errors=True)
    if dst.exists():
        dst.rename(old)
    src.rename(dst)
    shutil.rmtree(old, ignore_errors=True)


def _genes(ws: Workspace) -> list[str] | None:
    """The omics panel the backbone reads, in order (new extracts are aligned to it when scored)."""
    import polars as pl

    path = ws.curated / "omics_features.parquet"
    if not path.exists():
        return None
    frame = pl.read_parquet(path)
    return frame.sort("index")["feature"].to_list() if "feature" in frame.columns else None


def _checkpoint_tokenizer(path: Path, resume: bool):
    """The tokenizer saved with this run's checkpoints, when resuming one (None: train a new one)."""
    if not (resume and (path / "tokenizer.json").exists()):
        return None
    from models.encoders.text import load_tokenizer

    return load_tokenizer(path)


@task(name="train-backbone", cache_policy=NO_CACHE)
def train_backbone(ws: Workspace, p: dict, key: str, resume: bool) -> dict:
    """-> {model, tokenizer, losses, val_losses, best_step, params}; under torchrun when p['nproc'] > 1."""
    import torch

    from tasks.training.data import load_split
    from tasks.training.dataset import DatasetConfig, model_inputs
    from tasks.training.fit import corpus_tokenizer, new_model, pretrain
    from tasks.validation.contracts import check_model_inputs

    cfg = train_config(p, "pretrain")
    config = DatasetConfig()
    ckpt = ws.state / "checkpoints" / key
    tokenizer = _checkpoint_tokenizer(ckpt / "tokenizer", resume)
    if tokenizer is None and (tokenizer := corpus_tokenizer(ws.curated, "train", int(p["vocab_size"]),
                                                            config.max_text_length)) is not None:
        # the token ids the checkpoints are trained with are kept beside them: training is deterministic
        # (models/encoders/text.py), but a tokenizers upgrade between a kill and its resume could still change them
        tokenizer.save_pretrained(str(ckpt / "tokenizer"))
    train, val = load_split(ws.curated, "train", tokenizer, config), load_split(ws.curated, "val", tokenizer, config)
    problems = check_model_inputs(model_inputs(train.take(range(min(64, len(train)))).tensors))
    if problems:
        raise ValueError(f"curated training data break data_contracts/model_io.yaml: {'; '.join(problems[:5])}")
    n_omics = train.tensors["omics"].shape[1] if "omics" in train.tensors else None
    model = new_model(p["model"], cfg.seed, n_omics)
    nproc = int(p.get("nproc", 1))
    from tasks.training.ddp import failure_line, launch_torchrun, rendezvous_settings, save_split

    rdzv = rendezvous_settings(p, default_id=key)  # every node with the same params and data derives the same id
    if nproc > 1 or not rdzv.standalone:
        work = ckpt / "ddp"
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
        result = json.loads((work / "result.json").read_text())
        return {"model": model.eval(), "tokenizer": tokenizer, "losses": result["losses"], "val_losses": {},
                "best_step": None, "counts": train.counts(), "world_size": result["world_size"]}
    trained = pretrain(model, train, cfg, checkpoint_dir=ckpt, resume=resume, val=val,
                       eval_every=int(p.get("eval_every", 0)))
    return {"model": trained.model, "tokenizer": tokenizer, "losses": trained.result.losses,
            "val_losses": trained.val_losses, "best_step": trained.best_step, "counts": train.counts(),
            "world_size": 1}


@flow(name="pretrain")
@holds_workspace_lock("mmfm pretrain")
def pretrain_flow(workspace: Path, model: str | None = None, steps: int | None = None, nproc: int | None = None,
                  resume: bool = True) -> dict:
    from tasks import tracking
    from tasks.lineage import record

    ws = Workspace(Path(workspace).resolve())
    check_curated(ws.root)  # refuse data changed since validate, before any training
    p = ws.section("pretrain", model=model, steps=steps, nproc=nproc)
    facts = tracking.dataset_facts(ws.root)
    key = run_key("pretrain", p, facts["curated_md5"])
    log = get_run_logger()
    tracking.configure(ws.root)
    journal = RunJournal(ws, "pretrain", "pretrain", key)
    done = journal.recover(reuse=resume)
    if done:  # finished and logged by a run killed before its ledger event: record that run, train nothing
        summary = done["result"]
        log.info("pre-trained %s: kept from an interrupted run (MLflow run %s)", p["model"], summary["mlflow_run_id"])
    else:
        summary = _train_and_log(ws, p, key, facts, resume, journal)
    event = record(ws, "pretrain", str(flow_run.id or summary["mlflow_run_id"]), inputs=[ws.curated],
                   outputs=[ws.models / "backbone"], params=p,
                   facts={"mlflow_run_id": summary["mlflow_run_id"], "dataset_version": facts["dataset_version"],
                          "steps": summary["steps"], "final_loss": round(summary["final_loss"], 5)})
    journal.clear()
    log.info("pre-trained %s for %d steps: loss %.4f -> %.4f", p["model"], summary["steps"], summary["first_loss"],
             summary["final_loss"])
    return {**summary, "lineage_event": event.event_id}


def _train_and_log(ws: Workspace, p: dict, key: str, facts: dict, resume: bool, journal: RunJournal) -> dict:
    """Train (or resume) the backbone, publish models/backbone and log the MLflow run; -> the stage's summary."""
    import mlflow

    from tasks import tracking
    from tasks.training.bundle import backbone_sha256, save_backbone

    out = train_backbone(ws, p, key, resume)
    with mlflow.start_run(experiment_id=tracking.experiment_id(ws.root, EXPERIMENT), run_name=f"pretrain-{p['model']}",
                          tags=tracking.run_tags(ws.root, "pretrain", facts)) as run:
        journal.start(run.info.run_id)
        meta = {"model": p["model"], "mlflow_run_id": run.info.run_id, **facts, "steps": len(out["losses"]),
                "omics_genes": _genes(ws),
                "best_step": out["best_step"], "world_size": out["world_size"], "training_data": out["counts"],
                "code_version": tracking.run_tags(ws.root, "pretrain", facts)["mmfm.code_version"]}
        incoming = ws.models / ".backbone-incoming"
        shutil.rmtree(incoming, ignore_errors=True)
        save_backbone(incoming, out["model"], out["tokenizer"], meta)
        replace_dir(incoming, ws.models / "backbone")
        mlflow.log_params({k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in p.items()})
        tracking.log_curve(out["losses"], "train_loss")
        tracking.log_curve(out["val_losses"], "val_loss")
        mlflow.set_tag("mmfm.backbone_sha256", backbone_sha256(ws.models / "backbone"))
        mlflow.log_artifacts(str(ws.models / "backbone"), artifact_path="backbone")
        summary = {"model": p["model"], "steps": len(out["losses"]), "first_loss": out["losses"][0],
                   "final_loss": out["losses"][-1], "best_step": out["best_step"], "mlflow_run_id": run.info.run_id,
                   "dataset_version": facts["dataset_version"], "backbone": str(ws.models / "backbone")}
        journal.finish(summary, outputs=[ws.models / "backbone"])
    kill_point("pretrain.after_run")
    return summary


def run(workspace: Path) -> dict:
    return pretrain_flow(workspace)


if __name__ == "__main__":  # `dvc repro` runs `python -m flows.pretrain` in the workspace
    from tasks.settings import quiet_telemetry

    quiet_telemetry()
    print(json.dumps(run(Path.cwd()), default=str))
