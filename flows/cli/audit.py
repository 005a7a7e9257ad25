"""`mmfm audit {report,export,verify}`: governance over the lineage ledger and the registry."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import (
    DebugOpt,
    JsonOpt,
    WorkspaceOpt,
    app,
    command,
    emit,
    mlflow_errors,
    say,
    use_workspace,
)

audit_app = typer.Typer(help="Governance: verify the lineage chain and the artifacts it names.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("report")
@command
@mlflow_errors
def audit_report(
    model: Annotated[str, typer.Argument(help="NAME@alias or NAME/VERSION.")],
    out: Annotated[Path | None, typer.Option(help="Folder for the audit report (.md and .html; default data/audit).")]
    = None,
    workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """One report from each raw extract's sha256 to today's alias: ledger, de-identification, contracts, dataset
    version, training runs, evaluation, registration, approvals, monitoring; exit 1 if the chain has gaps."""
    from tasks import tracking
    from tasks.registry.audit_render import write_audit

    root = use_workspace(workspace)
    tracking.configure(root)
    result = write_audit(root, model, out or root / "data" / "audit")
    summary = {k: str(v) if isinstance(v, Path) else v for k, v in result.items()}
    emit(summary, as_json, lambda r: say(
        f"audit report: {r['html']} (verdict: {r['verdict']}{'' if r['complete'] else ': ' + '; '.join(r['gaps'])})",
        highlight=False, markup=False))
    if not result["complete"]:
        raise typer.Exit(1)


@audit_app.command("export")
@command
def audit_export(
    out: Annotated[Path, typer.Option("--out", help="NDJSON file of OpenLineage RunEvents, one per ledger event.")],
    workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False,
) -> None:
    """Export the lineage ledger as OpenLineage RunEvents; also POST them to OPENLINEAGE_URL when it is set."""
    from tasks.lineage import Ledger
    from tasks.lineage.openlineage import export_openlineage, send_openlineage

    root = use_workspace(workspace)
    ledger = Ledger.of_workspace(root)
    result = {"file": str(out), "events": export_openlineage(ledger, out), "sent": 0}
    if os.environ.get("OPENLINEAGE_URL"):
        result["sent"] = send_openlineage(ledger.events(), os.environ["OPENLINEAGE_URL"])
    emit(result, as_json, lambda r: say(f"{r['events']} OpenLineage events written to {r['file']}; {r['sent']} sent"))


@audit_app.command("verify")
@command
@mlflow_errors
def audit_verify(workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Re-hash the ledger's chain and every artifact it names, and check the registry against the ledger: every
    alias where the last approved promote/rollback (or register, for challenger) left it, every mmfm tag the ledger
    vouches for unchanged; exit 1 on any tampering, one line naming each alias or tag changed outside mmfm."""
    import mlflow

    from tasks import tracking
    from tasks.lineage import Ledger, verify
    from tasks.registry.registry_audit import RegistryCheck, check_registry
    from tasks.settings import get_settings

    root = use_workspace(workspace)
    ledger = Ledger.of_workspace(root)
    report = verify(ledger, root)
    uri = get_settings(root).tracking_uri
    registry = RegistryCheck(notes=["no MLflow store in this workspace: nothing registered to check"])
    if not uri.startswith("sqlite:") or (root / ".mmfm" / "mlflow.db").exists():
        tracking.configure(root)
        registry = check_registry(root, mlflow.MlflowClient())
    summary = {**report.to_dict(), "ok": report.ok and registry.ok, "ledger_ok": report.ok,
               "registry": registry.to_dict()}
    emit(summary, as_json, lambda _: say(f"{report.text()}\n{registry.text()}", highlight=False, markup=False))
    if not summary["ok"]:
        raise typer.Exit(1)
