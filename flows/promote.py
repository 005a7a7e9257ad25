"""`mmfm promote`, `mmfm rollback`: move an alias through the promotion gate, or give it back.

`promote` gathers the candidate's facts (re-hashing and PHI-scanning its artifacts as downloaded from the registry),
judges them with tasks.registry.gate, and records the approval or the refusal (with every reason, and every rule's
value, verdict and exception) in the version's tags and in the lineage ledger; only an approval moves the alias. A
decision is kept in a pending marker until its records are all written, so a rerun after a kill completes it
(tasks/registry/promotion.py). `rollback` gives the alias back to the version that held it before, recorded likewise.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
from prefect import flow, get_run_logger

from tasks.faults import kill_point
from tasks.registry import promotion
from tasks.registry.client import parse_ref
from tasks.stage.run import stage_run


@flow(name="promote")
def promote_flow(workspace: Path, model: str, alias: str, approver: str, reason: str) -> dict:
    """Gate, then record: decision tag on the version, ledger event, alias history, alias."""
    with stage_run(workspace, "promote") as run:
        client = mlflow.MlflowClient()
        name, version = parse_ref(model, client)
        pending = promotion.pending_or_decide(run.ws, client, name, version, alias, approver, reason)
        verdict, checks = pending["verdict"], pending["checks"]
        promotion.write_verdict(client, name, version, alias, pending)
        kill_point("promote.after_verdict")
        event = run.record(run_id=f"{name}/{version}/{alias}/{verdict['at']}",  # once per run id: a rerun adds none
                           params={"alias": alias, "approver": approver},
                           facts={"model_version": f"{name}/{version}", **verdict,
                                  "checks": promotion.recorded_checks(checks)})
        if verdict["decision"] != "approved":
            raise promotion.refuse(client, name, version, alias, verdict, checks)
        promotion.move_alias(client, name, version, alias)
    get_run_logger().info("%s/%s is now %s (approved by %s)", name, version, alias, approver)
    return {"name": name, "version": str(version), "alias": alias, **verdict, "checks": checks,
            "lineage_event": event.event_id}


@flow(name="rollback")
def rollback_flow(workspace: Path, name: str, alias: str, approver: str, reason: str) -> dict:
    """Give `alias` back to the version that held it before the current one (one command, recorded)."""
    with stage_run(workspace, "rollback") as run:
        verdict = promotion.roll_back(mlflow.MlflowClient(), name, alias, approver, reason)
        event = run.record(run_id=f"{name}/{alias}/{verdict['at']}", params={"alias": alias, "approver": approver},
                           facts={"model_version": f"{name}/{verdict['to_version']}", **verdict})
    return {"name": name, **verdict, "lineage_event": event.event_id}
