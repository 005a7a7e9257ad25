"""The model commands of `mmfm`: pretrain, finetune and evaluate (torch, MLflow and Prefect load only when one runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import DebugOpt, JsonOpt, WorkspaceOpt, app, command, run_flow, say, threads, use_workspace

TASK_HELP = "Clinical task: diagnosis (4 classes), risk (death within a year) or survival (Cox). Repeatable."


def render_pretrain(r: dict) -> None:
    say(f"pre-trained {r['model']} for {r['steps']} steps (loss {r['first_loss']:.4f} -> {r['final_loss']:.4f}) on "
        f"dataset {r['dataset_version']}\n  backbone: {r['backbone']}\n  MLflow run: {r['mlflow_run_id']}")


@app.command()
@command
def pretrain(
    model: Annotated[str | None, typer.Option(help="Named architecture (models/configs): tiny or base.")] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps (default: params.yaml pretrain.steps).")] = None,
    nproc: Annotated[int | None, typer.Option(help="Processes under torchrun (DDP); 1 trains in-process.")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Ignore checkpoints of an interrupted run.")] = False,
    workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Pre-train the multimodal backbone on the curated training split (contrastive + masked-modality)."""
    root = use_workspace(workspace)
    threads()
    run_flow("flows.pretrain", "pretrain_flow", as_json, debug, render_pretrain, workspace=root, model=model,
             steps=steps, nproc=nproc, resume=not fresh)


def render_finetune(r: dict) -> None:
    for name, t in r["tasks"].items():
        say(f"{name}: {t['trainable_params']:,} of {t['total_params']:,} parameters trained on "
            f"{t['train_patients']} patients (label fraction {r['label_fraction']}); MLflow run {t['mlflow_run_id']}")
    say(f"adapters: {r['adapters']} (backbone sha256 {r['backbone_sha256'][:12]})")


@app.command()
@command
def finetune(
    task: Annotated[list[str] | None, typer.Option("--task", help=TASK_HELP)] = None,
    label_fraction: Annotated[float | None, typer.Option(help="Share of training labels used: 0.01, 0.1, 1.0.")] = None,
    backbone: Annotated[str | None, typer.Option(
        help="Backbone: the workspace's (default), an MLflow run (runs:/<id>/backbone) or model version "
             "(models:/<name>/<version>).")] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps per task.")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Ignore checkpoints of an interrupted run.")] = False,
    workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Fine-tune task heads + LoRA adapters on the frozen backbone."""
    root = use_workspace(workspace)
    threads()
    run_flow("flows.finetune", "finetune_flow", as_json, debug, render_finetune, workspace=root, tasks=task,
             label_fraction=label_fraction, backbone=backbone, steps=steps, resume=not fresh)


def render_evaluate(r: dict) -> None:
    say(f"test split of dataset {r['dataset_version']}: {r['test_patients']} patients")
    for name, t in r["tasks"].items():
        m = t["metrics"][t["primary_metric"]]
        without = ", ".join(f"{mod} {res[t['primary_metric']]['value']}" for mod, res in t["without_modality"].items()
                            if t["primary_metric"] in res)
        say(f"  {name}: {t['primary_metric']} {m['value']} (95% CI {m['ci_low']}-{m['ci_high']}); "
            f"without one modality: {without}")
    say(f"  report: {Path(r.get('report', ''))}  MLflow run: {r['mlflow_run_id']}")


@app.command()
@command
def evaluate(
    cohort: Annotated[Path | None, typer.Option(
        help="Synthetic cohort folder whose truth/ gives the Bayes posterior to compare with (default: found "
             "under extracts/).")] = None,
    baselines: Annotated[bool | None, typer.Option(help="Train the single-modality and late-fusion baselines.")] = None,
    workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Evaluate every fine-tuned task on the held-out test split (CIs, subgroups, missing modalities, baselines)."""
    root = use_workspace(workspace)
    threads()
    run_flow("flows.evaluate", "evaluate_flow", as_json, debug, render_evaluate, workspace=root, cohort=cohort,
             baselines=baselines)
