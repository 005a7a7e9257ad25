"""The registry commands of `mmfm` (register, promote, rollback, predict, audit report), on flows.cli's app.

Against the embedded SQLite store by default; MLFLOW_TRACKING_URI (+ MLFLOW_TRACKING_USERNAME/PASSWORD for a
basic-auth server) points them at a shared `mlflow server`. A refused promotion exits 1 with every reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli import (
    DebugOpt,
    JsonOpt,
    StageError,
    WorkspaceOpt,
    _console,
    _run_flow,
    app,
    audit_app,
    command,
    use_workspace,
)
from flows.cli_models import _threads

NameOpt = Annotated[str, typer.Option("--name", help="Registered model name.")]


def _mlflow_errors(fn):
    """MLflow errors as one line: a tracking server that does not answer (after the client's bounded retries, see
    tasks.settings.MLFLOW_CLIENT_BOUNDS) is named by its URI; permission errors (403/401 from a basic-auth server)
    and other refusals quote MLflow's first line."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import requests
        from mlflow.exceptions import MlflowException

        from flows.registry import TrackingUnreachable, transport_failure, unreachable_message
        from tasks.settings import bounded_mlflow_retries

        bounded_mlflow_retries()
        try:
            return fn(*args, **kwargs)
        except TrackingUnreachable as exc:
            raise StageError(str(exc)) from None
        except (MlflowException, requests.RequestException) as exc:
            failure = transport_failure(exc)
            if failure is not None:
                raise StageError(unreachable_message(failure)) from None
            if isinstance(exc, requests.RequestException):
                raise
            raise StageError(f"MLflow refused: {str(exc).splitlines()[0][:300]}") from None

    return wrapper


@app.command()
@command
@_mlflow_errors
def register(
    name: NameOpt = "mmfm-multimodal",
    workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Register the evaluated backbone + adapters as one MLflow pyfunc version (alias: challenger)."""
    root = use_workspace(workspace)
    _threads()
    _run_flow("flows.registry", "register_flow", as_json, debug, lambda r: _console(stderr=False).print(
        f"registered {r['name']} version {r['version']} as {r['alias']} ({r['artifacts']} artifacts hashed, "
        f"{r['phi_findings']} PHI findings); dataset {r['dataset_version']}"), workspace=root, name=name)


@app.command()
@command
@_mlflow_errors
def promote(
    model: Annotated[str, typer.Argument(help="NAME/VERSION (or NAME@alias) to promote.")],
    approver: Annotated[str, typer.Option(help="Who approves (recorded).")],
    reason: Annotated[str, typer.Option(help="Why (recorded).")],
    alias: Annotated[str, typer.Option(help="The alias to move.")] = "champion",
    workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Move an alias to a version through the promotion gate; a refusal lists every reason and exits 1."""
    from flows.registry import PromotionRefused

    root = use_workspace(workspace)
    try:
        _run_flow("flows.registry", "promote_flow", as_json, debug, lambda r: _console(stderr=False).print(
            f"{r['name']}/{r['version']} is now {r['alias']} (approved by {r['approver']}: {r['reason']})"),
            workspace=root, model=model, alias=alias, approver=approver, reason=reason)
    except PromotionRefused as exc:
        raise StageError(str(exc)) from None


@app.command()
@command
@_mlflow_errors
def rollback(
    approver: Annotated[str, typer.Option(help="Who decides (recorded).")],
    reason: Annotated[str, typer.Option(help="Why (recorded).")],
    name: NameOpt = "mmfm-multimodal",
    alias: Annotated[str, typer.Option(help="The alias to give back.")] = "champion",
    workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Give the alias back to the version that held it before."""
    from flows.registry import PromotionRefused

    root = use_workspace(workspace)
    try:
        _run_flow("flows.registry", "rollback_flow", as_json, debug, lambda r: _console(stderr=False).print(
            f"{r['name']}@{r['alias']}: version {r['from_version']} -> {r['to_version']}"), workspace=root, name=name,
            alias=alias, approver=approver, reason=reason)
    except PromotionRefused as exc:
        raise StageError(str(exc)) from None


@app.command()
@command
@_mlflow_errors
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
    _threads()
    _run_flow("flows.predict", "predict_flow", as_json, debug, lambda r: _console(stderr=False).print(
        f"{r['patients']} patients scored by {r['model_version']} -> {r['output']}"), workspace=root, model=model,
        source=source, split=split, out=out)


@audit_app.command("report")
@command
@_mlflow_errors
def audit_report(
    model: Annotated[str, typer.Argument(help="NAME@alias or NAME/VERSION.")],
    out: Annotated[Path | None, typer.Option(help="Folder for the audit report (.md and .html; default data/audit).")]
    = None,
    workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """One report from each raw extract's sha256 to today's alias: ledger, de-identification, contracts, dataset
    version, training runs, evaluation, registration, approvals, monitoring; exit 1 if the chain has gaps."""
    from tasks import tracking
    from tasks.registry.audit_report import write_audit

    root = use_workspace(workspace)
    tracking.configure(root)
    result = write_audit(root, model, out or root / "data" / "audit")
    emit_result = {k: str(v) if isinstance(v, Path) else v for k, v in result.items()}
    from flows.cli import emit

    emit(emit_result, as_json, lambda r: _console(stderr=False).print(
        f"audit report: {r['html']} ({'complete' if r['complete'] else 'GAPS: ' + '; '.join(r['gaps'])})"))
    if not result["complete"]:
        raise typer.Exit(1)


@app.command()
@command
@_mlflow_errors
def monitor(
    source: Annotated[Path, typer.Argument(help="A new extract folder (dicom/, fhir/, omics/ per site).")],
    model: Annotated[str, typer.Option("--model", help="NAME@alias or NAME/VERSION.")] = "mmfm-multimodal@champion",
    workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Drift of a new extract against the champion's training data, per feature group and site; exit 3 on drift
    (after firing the retraining trigger, at most once per cooldown)."""
    root = use_workspace(workspace)
    _threads()

    def render(r: dict) -> None:
        con = _console(stderr=False)
        con.print(f"{r['extract']}: {r['status'].upper()} for {r['model_version']} ({r['current']['patients']} "
                  f"patients vs {r['reference']['patients']} held-out patients of the training data)")
        tab, emb = r["tabular"], r["embedding"]
        con.print(f"  tabular ({tab.get('test')}, {tab.get('correction')}, per-test threshold "
                  f"{tab.get('threshold'):.2e}): drifted sites {tab.get('drifted_sites') or 'none'}")
        con.print(f"  embeddings (MMD, threshold {emb.get('threshold'):.2e}): drifted "
                  f"{emb.get('drifted_sites') or 'none'}")
        con.print(f"  performance: {r['performance']}")
        if r.get("retrain"):
            con.print(f"  retraining trigger: {r['retrain'].get('status')}")
        con.print(f"  report: {r['report']}")

    result = _run_flow("flows.monitor", "monitor_flow", as_json, debug, render, workspace=root, source=source,
                       model=model)
    if result["status"] == "drift":
        raise typer.Exit(3)
