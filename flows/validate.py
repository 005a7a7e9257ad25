"""`mmfm validate`: the gate between staged and curated data.

Reads the staged tables, assigns each patient a split (by patient, never by row), runs every data contract
(data_contracts/contracts/, Great Expectations as the reporter of record, polars for the row split), moves rows
that break a `quarantine` rule into the quarantine records (with rule and contract version), and publishes the rest
to data/curated/ (tables + the image shards their rows point to). A `fail` rule blocks: nothing is published, the
report says table, rule and count, and the command exits 1.
What it publishes is recorded at once in dvc.lock (`dvc commit validate`), also when run alone (`mmfm validate`), so
the model stages can refuse a curated file changed afterwards (tasks.validation.curated_check). It holds the
workspace lock. The work is in tasks.validation (contracts, publish); this file wires it.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.run_names import run_name
from tasks.faults import kill_point
from tasks.ingest.quarantine import Quarantine
from tasks.lineage import artifact_entry, record
from tasks.validation.contracts import validate_tables
from tasks.validation.publish import (
    ValidationBlocked,
    publish_curated,
    quarantine_name,
    record_in_dvc,
    staged_tables,
    write_report,
)
from tasks.workspace import Workspace
from tasks.workspace_lock import holds_workspace_lock

__all__ = ["ValidationBlocked", "run", "validate"]


@flow(name="validate", flow_run_name=run_name("validate"))
@holds_workspace_lock("mmfm validate")
def validate(workspace: Path) -> dict:
    ws = Workspace(Path(workspace).resolve())
    run_id = str(flow_run.id or "local")
    p = ws.section("validate")
    staged_sha = artifact_entry(ws.staged, ws.root)["sha256"]  # before reading: what this validation describes
    report = validate_tables(staged_tables(ws, p["splits"]), context_dir=ws.reports / "gx")
    quarantine = Quarantine(run_id)
    quarantine.extend(report.rejections(run_id))
    qpath = quarantine.write(ws.quarantine, name=quarantine_name(staged_sha))
    kill_point("validate.after_quarantine")
    summary = {
        "run_id": run_id, **report.summary(),
        "contract_versions": {name: t.contract_version for name, t in report.tables.items()},
        "quarantined": quarantine.count(), "quarantine_reasons": quarantine.reasons(),
        "quarantine_file": str(qpath.relative_to(ws.root)) if qpath else None,
        "staged_sha256": staged_sha,
        "gx_results": str((ws.reports / "gx").relative_to(ws.root)),
    }
    write_report(ws, summary)
    if report.blocked:
        raise ValidationBlocked("; ".join(report.messages))
    summary["curated"] = publish_curated(ws, report.clean)
    outputs = [ws.curated, ws.validation_report, *([qpath] if qpath else [])]
    event = record(ws, "validate", run_id, inputs=[ws.staged], outputs=outputs, params=p,
                   facts={"quarantined": quarantine.count(), "contract_versions": summary["contract_versions"]})
    record_in_dvc(ws)  # after the event: a kill in between leaves DVC finding the stage out of date, never recorded
    # in dvc.lock without its ledger event (tasks.stage.status.finished_unrecorded() then only commits it)
    summary["lineage_event"] = event.event_id
    get_run_logger().info("validated %d tables; %d rows quarantined", len(report.tables), quarantine.count())
    return summary


def run(workspace: Path) -> dict:
    return validate(workspace)


if __name__ == "__main__":  # `dvc repro` runs `python -m flows.validate` in the workspace
    from tasks.settings import quiet_telemetry

    quiet_telemetry()
    print(json.dumps(run(Path.cwd()), default=str))
