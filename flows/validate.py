"""`mmfm validate`: the gate between staged and curated data.

Reads the staged tables, assigns each patient a split (by patient, never by row), runs every data contract
(data_contracts/contracts/, Great Expectations as the reporter of record, polars for the row split), moves rows
that break a `quarantine` rule into the quarantine records (with rule and contract version), and publishes the rest
to data/curated/ (tables + the image shards their rows point to). A `fail` rule blocks: nothing is published, the
report says table, rule and count, and the command exits 1.
What it publishes is recorded at once in dvc.lock (`dvc commit validate`), also when run alone (`mmfm validate`), so
the model stages can refuse a curated file changed afterwards (tasks.validation.curated_check). It holds the
workspace lock.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import polars as pl
from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from tasks.ingest.quarantine import Quarantine
from tasks.ingest.staged import read_table
from tasks.validation.splits import assign_splits
from tasks.workspace import Workspace
from tasks.workspace_lock import holds_workspace_lock

TABLES = ("patients", "encounters", "labs", "conditions", "notes", "imaging", "omics", "omics_features")
REPORT = "validation.json"


def quarantine_name(staged_sha: str) -> str:
    """The quarantine file's name: the staged data it was found in, not the run, so a rerun over the same staged
    data (after a kill before the run's ledger event) finds its file instead of adding a second copy."""
    return f"validate-{staged_sha[:16]}"


class ValidationBlocked(RuntimeError):
    """A `fail` rule was broken; the message names table, rule and count."""


def _staged_tables(ws: Workspace, fractions: dict[str, float]) -> dict[str, pl.DataFrame]:
    tables = {name: read_table(ws.staged, name) for name in TABLES}
    cohort = pl.read_parquet(ws.staged / "cohort.parquet") if (ws.staged / "cohort.parquet").exists() else None
    if cohort is not None:
        tables["cohort"] = assign_splits(cohort, fractions)
        split = tables["cohort"].select("patient_id", "split")
        for name, frame in tables.items():  # every patient's rows carry the patient's one split
            if name != "cohort" and "patient_id" in frame.columns and "split" not in frame.columns:
                tables[name] = frame.join(split, on="patient_id", how="left")
    return {k: v for k, v in tables.items() if v.height or v.width}


def _publish(ws: Workspace, clean: dict[str, pl.DataFrame]) -> dict[str, int]:
    """Write curated tables atomically (a fresh folder swapped in) with the shards the imaging rows use."""
    tmp = ws.curated.with_name(".curated-incoming")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, frame in clean.items():
        frame.write_parquet(tmp / f"{name}.parquet")
    if "imaging" in clean and clean["imaging"].height:
        (tmp / "images").mkdir()
        for shard in sorted(set(clean["imaging"]["shard"].drop_nulls())):
            src = ws.root / shard
            dst = tmp / "images" / Path(shard).name
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
    old = ws.curated.with_name(".curated-previous")
    shutil.rmtree(old, ignore_errors=True)
    if ws.curated.exists():
        ws.curated.rename(old)
    tmp.rename(ws.curated)
    shutil.rmtree(old, ignore_errors=True)
    return {name: frame.height for name, frame in clean.items()}


def _record(ws: Workspace) -> None:
    """Have DVC record the published snapshot's hashes (dvc.lock) and files (cache): what the model stages check."""
    if (ws.root / "dvc.yaml").exists() and (ws.root / ".dvc").is_dir():
        from tasks.vcs import dvc_run

        dvc_run(ws.root, "commit", "--force", "validate")


@flow(name="validate")
@holds_workspace_lock("mmfm validate")
def validate(workspace: Path) -> dict:
    from tasks.faults import kill_point
    from tasks.lineage import artifact_entry, record
    from tasks.validation.contracts import validate_tables

    ws = Workspace(Path(workspace).resolve())
    run_id = str(flow_run.id or "local")
    p = ws.section("validate")
    fractions = p["splits"]
    staged_sha = artifact_entry(ws.staged, ws.root)["sha256"]  # before reading: what this validation describes
    tables = _staged_tables(ws, fractions)
    report = validate_tables(tables, context_dir=ws.reports / "gx")
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
    ws.reports.mkdir(parents=True, exist_ok=True)
    (ws.reports / REPORT).write_text(json.dumps(summary, indent=1, default=str) + "\n")
    if report.blocked:
        raise ValidationBlocked("; ".join(report.messages))
    summary["curated"] = _publish(ws, report.clean)
    outputs = [ws.curated, ws.reports / REPORT, *([qpath] if qpath else [])]
    event = record(ws, "validate", run_id, inputs=[ws.staged], outputs=outputs, params=p,
                   facts={"quarantined": quarantine.count(), "contract_versions": summary["contract_versions"]})
    _record(ws)  # after the event: a kill in between leaves DVC finding the stage out of date, never recorded
    # in dvc.lock without its ledger event (flows/pipeline.py finished_unrecorded() then only commits it)
    summary["lineage_event"] = event.event_id
    get_run_logger().info("validated %d tables; %d rows quarantined", len(report.tables), quarantine.count())
    return summary


def run(workspace: Path) -> dict:
    return validate(workspace)


if __name__ == "__main__":  # `dvc repro` runs `python -m flows.validate` in the workspace
    from tasks.settings import quiet_telemetry

    quiet_telemetry()
    print(json.dumps(run(Path.cwd()), default=str))
