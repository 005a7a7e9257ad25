"""`mmfm register`: the workspace's evaluated backbone + adapters as one MLflow pyfunc version, alias `challenger`.

Open-source MLflow has neither approvals nor immutable versions, so mmfm adds both: the version carries the facts
the gate needs and the sha256 of every artifact as tags (tasks/registry/staging.py), and `load_verified` refuses a
tampered artifact. Nothing half-registered: the version is born `mmfm.registration=incomplete` (in the request that
creates it) and gets `complete` as the very last write; a rerun on the same files finds it by its content hash and
completes it (same version number, the ledger event recorded once) instead of registering a second copy. Once the
version is whole its model card is published with the real version number (tasks/registry/card_publish.py) as card/
of the register run, and the version's description says where.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
from prefect import flow, get_run_logger

from flows.run_names import run_name
from tasks import tags, tracking
from tasks.lineage import tree_sha256
from tasks.registry import staging as reg
from tasks.registry.card_publish import publish_model_card
from tasks.registry.client import DEFAULT_NAME
from tasks.registry.phi_scan import scan_artifacts
from tasks.stage.run import run_key, stage_run
from tasks.versioning.dataset import current


@flow(name="register", flow_run_name=run_name("register"))
def register_flow(workspace: Path, name: str = DEFAULT_NAME, alias: str = "challenger") -> dict:
    with stage_run(workspace, "register") as run:
        ws, data = run.ws, current(run.ws.root)
        reg.read_evaluation(ws)  # refuse before staging anything
        client = mlflow.MlflowClient()
        with tempfile.TemporaryDirectory(dir=ws.state) as tmp:
            staging = Path(tmp) / "model"
            evaluation = reg.stage_artifacts(ws, staging, name)
            content = tree_sha256(staging)
            existing, pending = reg.registered_with(client, name, content)
            attempt = run.attempt(run_key("register", {"name": name}, content),
                                  reuse=existing is None and pending is None)
            if existing is not None:  # a rerun registers nothing twice; it republishes the card
                card = publish_model_card(ws.root, client, name, existing)
                return {"name": name, "version": existing, "alias": alias, "model_uri": f"models:/{name}/{existing}",
                        "dataset_version": data.name, "already_registered": True, "model_card": card["artifact"],
                        "artifacts": None, "phi_findings": None, "mlflow_run_id": None, "lineage_event": None}
            findings = scan_artifacts(staging)
            run_tags = {**tracking.run_tags(ws.root, "register", data.facts()),
                        tags.key("evaluation_run_id"): str(evaluation.get("mlflow_run_id"))}
            mv, run_id = reg.model_version(ws, client, name, staging, content, run_tags, attempt, pending)
            tracking.describe_run(run_id, params={"name": name, "alias": alias})  # the register run's parameters
            hashes = reg.registered_hashes(name, mv.version, Path(tmp) / "registered")
        version_tags = reg.version_tags(ws, evaluation, hashes, content, len(findings))
        for key, value in version_tags.items():
            client.set_model_version_tag(name, mv.version, key, value)
        event = run.record(run_id=f"{name}/{mv.version}",
                           inputs=[ws.models / "backbone", ws.models / "finetuned", ws.models / "evaluation"],
                           params={"name": name, "alias": alias},
                           facts={"model_version": f"{name}/{mv.version}", "mlflow_run_id": run_id,
                                  "dataset_version": data.name, "artifacts": len(hashes),
                                  "artifact_manifest_sha256": version_tags[tags.key("sha256.manifest")]})
        client.set_model_version_tag(name, mv.version, tags.key("lineage_event"), event.event_id)
        client.set_registered_model_alias(name, alias, mv.version)
        client.set_model_version_tag(name, mv.version, tags.REGISTRATION, "complete")  # last: the version is whole
        card = publish_model_card(ws.root, client, name, str(mv.version))  # names the version; a rerun redoes it
    get_run_logger().info("registered %s version %s as %s", name, mv.version, alias)
    return {"name": name, "version": str(mv.version), "alias": alias, "model_uri": f"models:/{name}/{mv.version}",
            "already_registered": False, "completed_earlier_attempt": pending is not None,
            "dataset_version": data.name, "artifacts": len(hashes), "phi_findings": len(findings),
            "mlflow_run_id": run_id, "lineage_event": event.event_id, "model_card": card["artifact"]}
