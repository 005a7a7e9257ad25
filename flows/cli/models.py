"""The model commands of `mmfm`: pretrain, finetune and evaluate (torch, MLflow and Prefect load only when one runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import DebugOpt, JsonOpt, WorkspaceOpt, app, command, run_flow, say, threads, use_workspace

TASK_HELP = "Clinical task: diagnosis (4 classes), risk (death within a year) or survival (Cox). Repeatable."


def key_value_table(title: str, rows: list[tuple[str, object]]):
    """A two-column table (what, value) for a command's summary."""
    from rich.table import Table

    table = Table(title=title, show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    for what, value in rows:
        table.add_row(what, str(value))
    return table


def render_pretrain(r: dict) -> None:
    say(key_value_table(f"pre-trained {r['model']}", [
        ("steps", r["steps"]), ("loss", f"{r['first_loss']:.4f} -> {r['final_loss']:.4f}"),
        ("dataset version", r["dataset_version"]), ("backbone", r["backbone"]), ("MLflow run", r["mlflow_run_id"])]))


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
    from rich.table import Table

    table = Table(title=f"fine-tuned (label fraction {r['label_fraction']})")
    for col, justify in (("task", "left"), ("trained parameters", "right"), ("of", "right"),
                         ("train patients", "right"), ("MLflow run", "left")):
        table.add_column(col, justify=justify)
    for name, t in r["tasks"].items():
        table.add_row(name, f"{t['trainable_params']:,}", f"{t['total_params']:,}", str(t["train_patients"]),
                      str(t["mlflow_run_id"]))
    say(table)
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
    from rich.table import Table

    table = Table(title=f"test split of dataset {r['dataset_version']}: {r['test_patients']} patients, 95% CI")
    for col in ("task", "metric", "value", "CI", "without one modality"):
        table.add_column(col)
    for name, t in r["tasks"].items():
        metric = t["primary_metric"]
        m = t["metrics"][metric]
        without = ", ".join(f"{mod} {res[metric]['value']}" for mod, res in t["without_modality"].items()
                            if metric in res)
        table.add_row(name, metric, str(m["value"]), f"{m['ci_low']}-{m['ci_high']}", without or "-")
    say(table)
    say(f"report: {Path(r.get('report', ''))}  MLflow run: {r['mlflow_run_id']}")


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
