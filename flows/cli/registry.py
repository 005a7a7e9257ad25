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


ApproverOpt = Annotated[str | None, typer.Option(
    help="Who approves (recorded). Required where the MLflow tracking store does not authenticate users; where it "
         "does (MLFLOW_TRACKING_USERNAME against an http(s) server with basic-auth), the authenticated user is the "
         "approver recorded and naming anyone else is refused.")]


def _check_approver(root: Path, approver: str | None) -> None:
    """Refuse a missing or impersonated approver before any flow starts (the flow checks again)."""
    from tasks.registry.promotion import approver_of
    from tasks.settings import get_settings

    approver_of(approver, get_settings(root).tracking_uri)  # MLFLOW_TRACKING_URI, else the workspace's store


@app.command()
@command
@mlflow_errors
def promote(
    model: Annotated[str, typer.Argument(help="NAME/VERSION (or NAME@alias) to promote.")],
    reason: Annotated[str, typer.Option(help="Why (recorded).")],
    approver: ApproverOpt = None,
    alias: Annotated[str, typer.Option(help="The alias to move.")] = "champion",
    workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Move an alias to a version through the promotion gate; a refusal lists every reason and exits 1. The
    approval or refusal is recorded on the version and in the ledger (`mmfm lineage NAME/VERSION` shows it)."""
    from tasks.registry.promotion import PromotionRefused

    root = use_workspace(workspace)
    try:
        _check_approver(root, approver)
        run_flow("flows.promote", "promote_flow", as_json, debug, lambda r: say(
            f"{r['name']}/{r['version']} is now {r['alias']} (approved by {r['approver']}"
            f"{' (authenticated)' if r.get('approver_authenticated') else ''}: {r['reason']})"),
            workspace=root, model=model, alias=alias, approver=approver, reason=reason)
    except PromotionRefused as exc:
        raise StageError(str(exc)) from None


@app.command()
@command
@mlflow_errors
def rollback(
    reason: Annotated[str, typer.Option(help="Why (recorded).")],
    approver: ApproverOpt = None,
    name: NameOpt = "mmfm-multimodal",
    alias: Annotated[str, typer.Option(help="The alias to give back.")] = "champion",
    workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Give the alias back to the version that held it before (recorded on the version and in the ledger)."""
    from tasks.registry.promotion import PromotionRefused

    root = use_workspace(workspace)
    try:
        _check_approver(root, approver)
        run_flow("flows.promote", "rollback_flow", as_json, debug, lambda r: say(
            f"{r['name']}@{r['alias']}: version {r['from_version']} -> {r['to_version']}"), workspace=root, name=name,
            alias=alias, approver=approver, reason=reason)
    except PromotionRefused as exc:
        raise StageError(str(exc)) from None


@app.command()
@command
@mlflow_errors
def predict(
    model: Annotated[str, typer.Option("--model", help="NAME@alias (only where the promotion gate set the alias) "
                                                       "or NAME/VERSION (an explicit version: no gate check).")],
    source: Annotated[Path | None, typer.Argument(help="A new extract folder (dicom/, fhir/, omics/ per site) to "
                                                       "ingest and score; default: the curated data.")] = None,
    split: Annotated[str, typer.Option(help="Curated split to score when no SOURCE: test, val, train or all.")]
    = "test",
    out: Annotated[Path | None, typer.Option(help="Output parquet (default under data/predictions/).")] = None,
    allow_ungated: Annotated[bool, typer.Option(
        "--allow-ungated", help="Score with an alias the promotion gate did not set (moved outside mmfm, e.g. in the "
                                "MLflow UI); the ledger records the run as ungated.")] = False,
    workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Batch-score patients with a registered model (hash-verified at load); parquet out, recorded in the ledger.
    An alias the gate did not set is refused (exit 1, naming it) unless --allow-ungated."""
    import mlflow

    from tasks import tracking
    from tasks.registry.gated import require_gated

    root = use_workspace(workspace)
    tracking.configure(root)
    require_gated(root, mlflow.MlflowClient(), model, allow_ungated)  # refuse before any Prefect server starts
    threads()
    run_flow("flows.predict", "predict_flow", as_json, debug, lambda r: say(
        f"{r['patients']} patients scored by {r['model_version']}{' (UNGATED alias)' if r.get('ungated') else ''} "
        f"-> {r['output']}"), workspace=root, model=model, source=source, split=split, out=out,
        allow_ungated=allow_ungated)


def _performance_line(perf: dict) -> tuple[str, str]:
    """(what was measured, the decision) of the performance rule, in words."""
    if perf.get("status") != "measured":
        return perf.get("reason") or str(perf.get("status")), "not tested"
    if "drop_lower" not in perf:  # a report of the point-estimate rule
        return f"AUROC {perf.get('auroc_macro')} vs {perf.get('at_evaluation')}: drop {perf.get('drop')}", (
            "drift" if perf.get("drifted") else "no drift")
    level = 1 - float(perf.get("alpha", 0.05))
    measured = (f"AUROC {perf['auroc_macro']} ({perf['labelled']} patients) vs {perf['reference_auroc_macro']} "
                f"({perf['reference_labelled']} test patients): drop {perf['drop']}, one-sided {level:.0%} lower "
                f"bound {perf['drop_lower']} vs tolerance {perf['tolerance']}")
    decision = "drift" if perf["drifted"] else ("within tolerance" if perf.get("within_tolerance") else
                                                "no credible drop (interval reaches the tolerance)")
    return measured, decision


def _family_line(part: dict, untested: int) -> tuple[str, str]:
    """(the test and its threshold, the result) of a tabular, predictions or embedding family."""
    tests = part.get("test")
    names = " / ".join(tests.values()) if isinstance(tests, dict) else str(tests)
    threshold = part.get("threshold")
    detail = f"{names}, {part.get('correction')}" + (f", per-test threshold {threshold:.2e}" if threshold else "")
    scopes = [part.get("overall") or {}, *(part.get("sites") or {}).values(), *(part.get("modalities") or {}).values()]
    if not any(s.get("status") == "tested" for s in scopes):
        return detail, "not tested"
    sites = ", ".join(s if isinstance(s, str) else f"{s[1]} ({s[0]})" for s in part.get("drifted_sites") or [])
    result = f"drift: {sites}" if sites else ("drift" if part.get("drifted") else "no drift")
    return detail, result + (f" ({untested} untested)" if untested else "")


def render_monitor(r: dict) -> None:
    from rich.table import Table

    say(f"{r['extract']}: {r['status'].upper()} for {r['model_version']} ({r['current']['patients']} "
        f"patients vs {r['reference']['patients']} held-out patients of the training data)")
    table = Table("family", "test", "result", box=None, pad_edge=False, show_edge=False)
    untested = r.get("untested") or []
    for family in ("tabular", "predictions", "embedding"):
        table.add_row(family, *_family_line(r[family], sum(u["family"] == family for u in untested)))
    table.add_row("performance", *_performance_line(r["performance"]))
    say(table)
    if untested:
        say(f"not tested ({len(untested)}):")
        listed = Table("site", "family", "reason", box=None, pad_edge=False, show_edge=False)
        for u in untested:
            listed.add_row(u["site"], f"{u['family']} ({u['modality']})" if u.get("modality") else u["family"],
                           u["reason"])
        say(listed)
    if r.get("retrain"):
        say(f"retraining trigger: {r['retrain'].get('status')}")
    say(f"report: {r['report']}")


@app.command()
@command
@mlflow_errors
def monitor(
    source: Annotated[Path, typer.Argument(help="A new extract folder (dicom/, fhir/, omics/ per site).")],
    model: Annotated[str, typer.Option("--model", help="NAME@alias or NAME/VERSION.")] = "mmfm-multimodal@champion",
    allow_ungated: Annotated[bool, typer.Option(
        "--allow-ungated", help="Monitor with an alias the promotion gate did not set (moved outside mmfm).")]
    = False,
    workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Drift of a new extract against the champion's training data, per feature group and site. Exit 0: ok;
    3: drift in a tested family (after firing the retraining trigger, at most once per cooldown); 4: insufficient,
    nothing drifted but some site or family could not be tested (listed, with why)."""
    from tasks.monitoring.verdict import EXIT_CODES  # plain Python: no heavy import

    root = use_workspace(workspace)
    threads()
    try:
        result = run_flow("flows.monitor", "monitor_flow", as_json, debug, render_monitor, workspace=root,
                          source=source, model=model, allow_ungated=allow_ungated)
    except Exception as exc:
        if type(exc).__name__ == "UngatedAlias" and not debug:  # by name: tasks.registry.gated loads MLflow
            raise StageError(str(exc)) from None
        raise
    if EXIT_CODES.get(result["status"], 1):
        raise typer.Exit(EXIT_CODES.get(result["status"], 1))
