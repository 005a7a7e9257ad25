"""Areas for data that must never become training data: extracts to score (`mmfm predict`) or to monitor
(`mmfm monitor`) cross the same ingest, de-identification and validation path as training data, into a workspace of
their own under <workspace>/.mmfm/areas/<kind>/<name>/ (same pseudonym key, same parameters, every patient in one
split), so nothing of theirs can reach data/curated or a dataset version of the main workspace.
Preparing an area again (a rerun after a kill, or the same extract monitored twice) ingests only new files, validates
only when DVC finds the area's validate stage out of date, and reports the extract's counts over all its runs.
An area is named by a keyed digest of the extract's path, never by the folder's name (it may name a patient): the
name reaches Prefect (the area's flow runs take it as their workspace), MLflow (the monitor run's name) and reports.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from flows.ingest import run as ingest
from flows.pipeline import render_dvc_yaml
from flows.validate import validate
from tasks.deid import Pseudonymizer, key_from_settings
from tasks.ingest.guards import IngestRefused
from tasks.lineage import Ledger
from tasks.stage.status import commit_if_finished, stage_is_current
from tasks.validation.publish import ValidationBlocked
from tasks.workspace import Workspace, init_workspace

KINDS = ("scoring", "monitoring")


def area_name(source: Path) -> str:
    """A stable name per extract folder, `extract-<16 hex>`: a digest of its absolute path keyed with the pseudonym
    key, so the name says nothing of the folder's name and cannot be confirmed by hashing a guessed path."""
    source = Path(source).resolve()
    return "extract-" + Pseudonymizer(key_from_settings()).digest("mmfm-area-v1", str(source)).hex()[:16]


def prepare_area(ws: Workspace, source: Path, kind: str) -> dict:
    """Ingest + validate `source` into its own area; -> {area (Workspace), ingest, validate} summaries."""
    if kind not in KINDS:
        raise ValueError(f"unknown area kind {kind!r}; known: {', '.join(KINDS)}")
    source = Path(source).resolve()
    if not source.is_dir():
        raise IngestRefused(f"the {kind} extract path is not a folder")  # never the path: it may name a patient
    area = init_workspace(ws.state / "areas" / kind / area_name(source), dvc_yaml=render_dvc_yaml())
    params = ws.params()
    params["validate"] = {"splits": {"test": 1.0}}  # nothing here trains anything
    area.params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    target = area.extracts / source.name
    if not target.exists():
        shutil.copytree(source, target)
    ingested = {**ingest(area.root), **_ingested_so_far(area)}
    report = area.validation_report
    if report.exists() and (stage_is_current(area.root, "validate") or commit_if_finished(area.root, "validate")):
        # a rerun (e.g. after a kill): validated already
        return {"area": area, "ingest": ingested, "validate": json.loads(report.read_text())}
    try:
        validated = validate(area.root)
    except ValidationBlocked as exc:
        raise ValidationBlocked(f"the {kind} extract {area.root.name} failed a blocking contract: {exc}") from None
    return {"area": area, "ingest": ingested, "validate": validated}


def _ingested_so_far(area: Workspace) -> dict:
    """The extract's counts over every ingest run of its area (its ledger), not only the last run: a rerun (e.g.
    after a kill) ingests nothing new and must not report the extract as empty."""
    events = [e for e in Ledger.of_workspace(area.root).events() if e.stage == "ingest"]
    return {k: sum(int((e.facts or {}).get(k, 0)) for e in events) for k in ("received", "ingested", "quarantined")}
