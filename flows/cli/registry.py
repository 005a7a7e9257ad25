"""The registry commands of `mmfm`: register, promote, rollback, predict and monitor.

Against the embedded SQLite store by default; MLFLOW_TRACKING_URI (+ MLFLOW_TRACKING_USERNAME/PASSWORD for a
basic-auth server) points them at a shared `mlflow server`. A refused promotion exits 1 with every reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import (
    DebugOpt,
    JsonOpt,
    StageError,
    WorkspaceOpt,
    app,
    command,
    mlflow_errors,
    run_flow,
    say,
    threads,
    use_workspace,
)

NameOpt = Annotated[str, typer.Option("--name", help="Registered model name.")]


@app.command()
@command
@mlflow_errors
def register(
    name: NameOpt = "mmfm-multimodal",
    workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Register the evaluated backbone + adapters as one MLflow pyfunc version (alias: challenger)."""
    root = use_workspace(workspace)
    threads()
    run_flow("flows.register", "register_flow", as_json, debug, lambda r: say(
        f"registered {r['name']} version {r['version']} as {r['alias']} ({r['artifacts']} artifacts hashed, "
        f"{r['phi_findings']} PHI findings); dataset {r['dataset_version']}"), workspace=root, name=name)


@app.command()
@command
@mlflow_errors
def promote(
    model: Annotated[str, typer.Argument(help="NAME/VERSION (or NAME@alias) to promote.")],
    approver: Annotated[str, typer.Option(help="Who approves (recorded).")],
    reason: Annotated[str, typer.Option(help="Why (recorded).")],
    alias: Annotated[str, typer.Option(help="The alias to move.")] = "champion",
    workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Move an alias to a version through the promotion gate; a refusal lists every reason and exits 1."""
    from tasks.registry.promotion import PromotionRefused

    root = use_workspace(workspace)
    try:
        run_flow("flows.promote", "promote_flow", as_json, debug, lambda r: say(
            f"{r['name']}/{r['version']} is now {r['alias']} (approved by {r['approver']}: {r['reason']})"),
            workspace=root, model=model, alias=alias, approver=approver, reason=reason)
    except PromotionRefused as exc:
        raise StageError(str(exc)) from None


@app.command()
@command
@mlflow_errors
def rollback(
    approver: Annotated[str, typer.Option(help="Who decides (recorded).")],
    reason: Annotated[str, typer.Option(help="Why (recorded).")],
    name: NameOpt = "mmfm-multimodal",
    alias: Annotated[str, typer.Option(help="The alias to give back.")] = "champion",
    workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Give the alias back to the version that held it before."""
    from tasks.registry.promotion import PromotionRefused

    root = use_workspace(workspace)
    try:
        run_flow("flows.promote", "rollback_flow", as_json, debug, lambda r: say(
            f"{r['name']}@{r['alias']}: version {r['from_version']} -> {r['to_version']}"), workspace=root, name=name,
            alias=alias, approver=approver, reason=reason)
    except PromotionRefused as exc:
        raise StageError(str(exc)) from None


@app.command()
@command
@mlflow_errors
def predict(
    model: Annotated[str, typer.Option("--model", help="NAME@alias or NAME/VERSION.")],
    source: Annotated[Path | None, typer.Argument(help="A new extract folder (dicom/, fhir/, omics/ per site) to "
                                                       "ingest and score; default: the curated data.")] = None,
    split: Annotated[str, typer.Option(help="Curated split to score when no SOURCE: test, val, train or all.")]
    = "test",
    out: Annotated[Path | None, typer.Option(help="Output parquet (default under data/predictions/).")] = None,
    workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Batch-score patients with a registered model (hash-verified at load); parquet out, recorded in the ledger."""
    root = use_workspace(workspace)
    threads()
    run_flow("flows.predict", "predict_flow", as_json, debug, lambda r: say(
        f"{r['patients']} patients scored by {r['model_version']} -> {r['output']}"), workspace=root, model=model,
        source=source, split=split, out=out)


def render_monitor(r: dict) -> None:
    say(f"{r['extract']}: {r['status'].upper()} for {r['model_version']} ({r['current']['patients']} "
        f"patients vs {r['reference']['patients']} held-out patients of the training data)")
    tab, emb = r["tabular"], r["embedding"]
    say(f"  tabular ({tab.get('test')}, {tab.get('correction')}, per-test threshold {tab.get('threshold'):.2e}): "
        f"drifted sites {tab.get('drifted_sites') or 'none'}")
    say(f"  embeddings (MMD, threshold {emb.get('threshold'):.2e}): drifted {emb.get('drifted_sites') or 'none'}")
    say(f"  performance: {r['performance']}")
    if r.get("retrain"):
        say(f"  retraining trigger: {r['retrain'].get('status')}")
    say(f"  report: {r['report']}")


@app.command()
@command
@mlflow_errors
def monitor(
    source: Annotated[Path, typer.Argument(help="A new extract folder (dicom/, fhir/, omics/ per site).")],
    model: Annotated[str, typer.Option("--model", help="NAME@alias or NAME/VERSION.")] = "mmfm-multimodal@champion",
    workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Drift of a new extract against the champion's training data, per feature group and site; exit 3 on drift
    (after firing the retraining trigger, at most once per cooldown)."""
    root = use_workspace(workspace)
    threads()
    result = run_flow("flows.monitor", "monitor_flow", as_json, debug, render_monitor, workspace=root, source=source,
                      model=model)
    if result["status"] == "drift":
        raise typer.Exit(3)
