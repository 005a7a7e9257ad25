"""`mmfm monitor SOURCE`: does the champion still see the data it was trained on?

The extract crosses the same ingest, de-identification and validation path into a monitoring area (flows/area.py:
never training data) and is scored by the champion (hash-verified at load). Compared with the curated dataset the
champion was trained on: tabular drift of labs/vitals, demographics and image acquisition (scanner, intensity;
Evidently, KS / two-sample chi-square, Bonferroni over features x sites; vs every curated patient: no model involved);
against its held-out val + test patients only: prediction drift (the class probabilities, same tests) and embedding
drift per modality and site (MMD permutation test on the backbone's per-modality embeddings); performance drift when
the extract carries outcomes (tasks/monitoring/report.py). Reports: data/monitoring/<area>/drift.json + tabular.html;
an MLflow run tagged with the model version; a ledger event; a Prefect event. A breach fires the retraining trigger
(params.yaml monitor.cooldown_hours) which runs the `retrain` deployment when one exists on the Prefect API, else
emits the `mmfm.retrain.requested` event for an automation to act on.

Monitor holds the workspace lock, not only its area's: its reference is the workspace's data/curated and dvc.lock
(read for the drift tests and the run key), which `ingest`/`validate`/`version` rewrite under that lock, and it
writes the workspace's ledger, run journal and data/monitoring/. The area itself is locked too, by the ingest and
validate flows that prepare it (always workspace first, then area: no lock-order inversion).

Status (tasks/monitoring/verdict.py): `drift` (exit 3) when any tested family drifted, else `insufficient` (exit 4)
when any site x family could not be tested (the report's `untested` says which and why), else `ok` (exit 0).
Performance drifts only when the AUROC drop is credibly above the tolerance (tasks/monitoring/performance.py).
The model must hold its alias through the promotion gate (tasks/registry/gated.py) unless `allow_ungated`.

The extract's path never reaches Prefect's run database (flows/boundary.py): `source` is withheld from the stored
parameters, and a deployment leaves it out and sets MMFM_MONITOR_SOURCE in the worker's own environment instead
(a deployment's parameters are stored as given). Logs, the report, the MLflow run and the retraining event name
the extract by its monitoring area (`extract-<digest>`, flows/area.py), never by its folder's name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.area import prepare_area
from flows.boundary import private_flow
from flows.run_names import run_name
from tasks.monitoring import report as drift
from tasks.monitoring import verdict
from tasks.monitoring.drift_html import write_reports
from tasks.registry.client import parse_ref
from tasks.stage.run import run_key, stage_run
from tasks.workspace import Workspace, lock_hash


@task(name="drift-report", cache_policy=NO_CACHE)
def drift_task(ws: Workspace, p: dict, model_version: str, prepared: dict, out: Path, source: Path) -> dict:
    return drift.drift_report(ws, p, model_version, prepared, out, source)


SOURCE_ENV = "MMFM_MONITOR_SOURCE"  # a deployment's extract, read on the worker (never a stored parameter)


@private_flow("monitor", private=("source",), guard=False, flow_run_name=run_name("monitor"))
def monitor_flow(workspace: Path, source: Path | None = None, model: str = "mmfm-multimodal@champion",
                 allow_ungated: bool = False) -> dict:
    """Monitor the extract at `source` (default: $MMFM_MONITOR_SOURCE) with `model` against its training data;
    an alias the promotion gate did not set is refused (UngatedAlias) unless `allow_ungated`."""
    source = source or os.environ.get(SOURCE_ENV)
    if not source:
        raise ValueError(f"no extract to monitor: pass SOURCE, or set {SOURCE_ENV} where the flow runs")
    with stage_run(workspace, "monitor") as run:
        ws, log, p = run.ws, get_run_logger(), run.ws.section("monitor")
        from tasks.registry.gated import require_gated  # lazy: the registry check, only when a flow runs

        client = mlflow.MlflowClient()
        gate = require_gated(ws.root, client, model, allow_ungated=allow_ungated)
        if not gate["gated"]:
            log.warning("monitoring with an alias the gate did not set (--allow-ungated): %s", gate.get("warning"))
        name, version = parse_ref(model, client)
        prepared = prepare_area(ws, Path(source), "monitoring")
        area = prepared["area"]
        label = Path(area.root.name)  # what the report calls the extract: its area, never the folder's name
        out = ws.root / "data" / "monitoring" / area.root.name
        out.mkdir(parents=True, exist_ok=True)
        data = f"{lock_hash(area.root, 'validate', 'data/curated')}+{lock_hash(ws.root, 'validate', 'data/curated')}"
        attempt = run.attempt(run_key("monitor", {"model": f"{name}/{version}", **p}, data),
                              f"monitor-{area.root.name}")
        if attempt.reused:  # reported and logged by a run killed before its ledger event
            report, run_id = json.loads((out / "drift.json").read_text()), attempt.result["mlflow_run_id"]
            log.info("monitoring %s: kept from an interrupted run (MLflow run %s)", area.root.name, run_id)
        else:
            report = drift_task(ws, p, f"{name}/{version}", prepared, out, label)
            report["gate"] = json.loads(json.dumps(gate, default=str))
            verdict.settle(report)  # status + untested (idempotent: report.py may have settled it already)
            write_reports(report, out)  # drift.json, drift.html and Evidently's page say the settled status
            run_id = drift.log_monitoring(report, out, f"{name}/{version}", area.root.name, attempt)
        verdict.settle(report)  # a report kept from an interrupted run of an older version gets its status too
        drift.note_on_version(name, version, run_id, report)
        event = run.record(inputs=[area.curated, ws.curated], outputs=[out / "drift.json"],
                           params={"model": f"{name}/{version}", **p},
                           facts={"status": report["status"], "flagged_sites": report["flagged_sites"],
                                  "untested": [f"{u['site']}:{u['family']}" for u in report["untested"]],
                                  "ungated": not gate["gated"],
                                  "mlflow_run_id": run_id, "retrain": (report["retrain"] or {}).get("status")})
    report |= {"mlflow_run_id": run_id, "lineage_event": event.event_id, "report": str(out / "drift.json")}
    untested = verdict.describe_untested(report)
    log.log(30 if report["status"] != "ok" else 20, "monitoring %s: %s%s%s", area.root.name, report["status"],
            f" ({report['findings']})" if report["findings"] else "", f"; not tested: {untested}" if untested else "")
    return report
