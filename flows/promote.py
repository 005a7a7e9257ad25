"""`mmfm promote`, `mmfm rollback`: move an alias through the promotion gate, or give it back.

`promote` gathers the candidate's facts (re-hashing and PHI-scanning its artifacts as downloaded from the registry),
judges them with tasks.registry.gate, and records the approval or the refusal (with every reason, and every rule's
value, verdict and exception) in the version's tags and in the lineage ledger; only an approval moves the alias. A
decision is kept in a pending marker until its records are all written, so a rerun after a kill completes it
(tasks/registry/promotion.py). `rollback` gives the alias back to the version that held it before, recorded likewise.
Both ledger events name the model version(s) as inputs (`models:/NAME/VERSION` with the artifact manifest's sha256,
the node `register` produced), so approvals, refusals and rollbacks appear in `mmfm lineage` of the version. Where the
MLflow server authenticates users, the approver recorded is the authenticated user (promotion.approver_of).
"""

from __future__ import annotations

from pathlib import Path

import mlflow
from prefect import flow, get_run_logger

from flows.run_names import run_name
from tasks.faults import kill_point
from tasks.registry import promotion
from tasks.registry.card_publish import refresh_model_card
from tasks.registry.client import parse_ref
from tasks.registry.gated import version_entry
from tasks.stage.run import stage_run


@flow(name="promote", flow_run_name=run_name("promote"))
def promote_flow(workspace: Path, model: str, alias: str, approver: str | None, reason: str) -> dict:
    """Gate, then record: decision tag on the version, ledger event, alias history, alias."""
    with stage_run(workspace, "promote") as run:
        approver, authenticated = promotion.approver_of(approver, mlflow.get_tracking_uri())
        client = mlflow.MlflowClient()
        name, version = parse_ref(model, client)
        pending = promotion.pending_or_decide(run.ws, client, name, version, alias, approver, reason, authenticated)
        verdict, checks = pending["verdict"], pending["checks"]
        promotion.write_verdict(client, name, version, alias, pending)
        kill_point("promote.after_verdict")
        event = run.record(run_id=f"{name}/{version}/{alias}/{verdict['at']}",  # once per run id: a rerun adds none
                           inputs=[e for e in [version_entry(client, name, version)] if e],
                           params={"alias": alias, "approver": approver},
                           facts={"model_version": f"{name}/{version}", **verdict,
                                  "checks": promotion.recorded_checks(checks)})
        if verdict["decision"] != "approved":
            refresh_model_card(run.ws.root, client, name, version, get_run_logger())  # the card shows the refusal
            raise promotion.refuse(client, name, version, alias, verdict, checks)
        promotion.move_alias(client, name, version, alias)
        refresh_model_card(run.ws.root, client, name, version, get_run_logger())  # the card shows the approval
    get_run_logger().info("%s/%s is now %s (approved by %s)", name, version, alias, approver)
    return {"name": name, "version": str(version), "alias": alias, **verdict, "checks": checks,
            "lineage_event": event.event_id}


@flow(name="rollback", flow_run_name=run_name("rollback"))
def rollback_flow(workspace: Path, name: str, alias: str, approver: str | None, reason: str) -> dict:
    """Give `alias` back to the version that held it before the current one (one command, recorded)."""
    with stage_run(workspace, "rollback") as run:
        approver, authenticated = promotion.approver_of(approver, mlflow.get_tracking_uri())
        client = mlflow.MlflowClient()
        verdict = promotion.roll_back(client, name, alias, approver, reason, authenticated)
        versions = (verdict["from_version"], verdict["to_version"])  # both: it shows in the lineage of either
        event = run.record(run_id=f"{name}/{alias}/{verdict['at']}", params={"alias": alias, "approver": approver},
                           inputs=[e for v in versions if (e := version_entry(client, name, v))],
                           facts={"model_version": f"{name}/{verdict['to_version']}", **verdict})
        for v in versions:  # both cards show the rollback
            refresh_model_card(run.ws.root, client, name, v, get_run_logger())
    return {"name": name, **verdict, "lineage_event": event.event_id}
