"""The monitor stage's work: score a prepared monitoring area with the (hash-verified) model, test every drift
family against the curated data the model was trained on, fire the retraining trigger on a breach, write
data/monitoring/<area>/drift.json + drift.html (+ Evidently's tabular.html) and log it as the stage's MLflow run.

Reference: tabular drift against every curated patient (no model involved); prediction and embedding drift against
the held-out val + test patients only (the model has fitted its training patients). Three test families share alpha
(Bonferroni).
"""

from __future__ import annotations

import json
import tempfile
from datetime import timedelta
from pathlib import Path

import mlflow
from prefect.deployments import run_deployment
from prefect.events import emit_event

from tasks import tags, tracking
from tasks.monitoring import verdict
from tasks.monitoring.drift_html import write_reports
from tasks.monitoring.embedding_drift import embedding_drift
from tasks.monitoring.features import patient_features
from tasks.monitoring.findings import describe
from tasks.monitoring.performance import performance_drift
from tasks.monitoring.tabular_drift import tabular_drift
from tasks.monitoring.trigger import RetrainTrigger
from tasks.registry.staging import load_verified
from tasks.stage.run import Attempt
from tasks.training.bundle import load_adapter, read_meta
from tasks.training.curated_dataset import dataset_config
from tasks.training.fit import predict
from tasks.training.split_data import load_split
from tasks.versioning.dataset import current as dataset_version
from tasks.workspace import Workspace

EXPERIMENT = "mmfm-monitoring"
RETRAIN_DEPLOYMENT = "pipeline/retrain"


def queue_retrain(reason: dict) -> dict:
    """Start the retraining deployment if the Prefect API has one; always emit the event automations listen to."""
    emit_event(event="mmfm.retrain.requested", resource={"prefect.resource.id": "mmfm.model"},
               payload={k: v for k, v in reason.items() if k != "report"})
    try:
        run = run_deployment(RETRAIN_DEPLOYMENT, timeout=0)
        return {"queued": "deployment", "flow_run_id": str(run.id)}
    except Exception as exc:  # noqa: BLE001 - no deployment on an ephemeral API: the event is the request
        return {"queued": "event", "detail": f"no deployment {RETRAIN_DEPLOYMENT} ({type(exc).__name__})"}


def _load_model(ws: Workspace, model_version: str) -> tuple:
    """(diagnosis model, tokenizer, backbone meta, evaluation report) of a registered version, hash-verified."""
    with tempfile.TemporaryDirectory(dir=ws.state) as tmp:
        load_verified(model_version, Path(tmp))  # refuses tampered artifacts
        bundle = next(Path(tmp).rglob("bundle"))
        dx, tokenizer, _ = load_adapter(bundle / "finetuned" / "diagnosis", bundle / "backbone")
        bmeta = read_meta(bundle / "backbone")
        evaluation = json.loads(next(Path(tmp).rglob("evaluation/evaluation.json")).read_text())
    return dx, tokenizer, bmeta, evaluation


def _embedding_drift(dx, reference, current, ref_preds: dict, cur_preds: dict, p: dict, alpha: float) -> dict:
    """MMD per modality and site on the backbone's per-modality embeddings of the patients that have it."""
    sites, ref_site_list = [str(s) for s in current.meta["site"]], [str(s) for s in reference.meta["site"]]
    ref_emb, cur_emb, cur_sites, ref_sites = {}, {}, {}, {}
    for m in dx.modalities:
        r, c = ref_preds[f"present_{m}"], cur_preds[f"present_{m}"]
        ref_emb[m], cur_emb[m] = ref_preds[f"unimodal_{m}"][r], cur_preds[f"unimodal_{m}"][c]
        cur_sites[m] = [s for s, keep in zip(sites, c, strict=True) if keep]
        ref_sites[m] = [s for s, keep in zip(ref_site_list, r, strict=True) if keep]
    return embedding_drift(ref_emb, cur_emb, cur_sites, alpha=alpha, min_rows=int(p["min_rows"]),
                           n_permutations=int(p["n_permutations"]), ref_sites=ref_sites,
                           min_ref_rows=int(p["min_reference_rows"]))


def _tabular_drift(ws: Workspace, area: Workspace, everyone, reference, current, ref_preds: dict, cur_preds: dict,
                   p: dict, alpha: float, html: Path) -> tuple[dict, dict]:
    """(data drift vs every curated patient: no model involved, prediction drift vs the held-out patients)."""
    cur_frame, groups = patient_features(current, cur_preds, curated=area.curated)
    min_rows, same_site = int(p["min_rows"]), int(p["min_reference_rows"])
    data_groups = {g: cols for g, cols in groups.items() if g != "predictions"}
    ref_frame = patient_features(everyone, curated=ws.curated)[0]
    tabular = tabular_drift(ref_frame, cur_frame, data_groups, alpha=alpha, min_rows=min_rows,
                            html_path=html, max_rows=p.get("max_rows"), same_site_min=same_site)
    predictions = tabular_drift(patient_features(reference, ref_preds)[0], cur_frame,
                                {"predictions": groups["predictions"]}, alpha=alpha, min_rows=min_rows,
                                max_rows=p.get("max_rows"), same_site_min=same_site)
    return tabular, predictions


def drift_report(ws: Workspace, p: dict, model_version: str, prepared: dict, out: Path, source: Path) -> dict:
    """Score the prepared area, test every drift family, fire the retraining trigger on a breach, and write
    out/drift.json (+ tabular.html); -> the report."""
    area = prepared["area"]
    dx, tokenizer, bmeta, evaluation = _load_model(ws, model_version)
    cfg = dataset_config(bmeta)  # the model's gene panel and labs vocabulary
    everyone = load_split(ws.curated, None, tokenizer, cfg)
    reference = everyone.take([i for i, s in enumerate(everyone.meta["split"]) if s in ("val", "test")])
    current = load_split(area.curated, None, tokenizer, cfg)
    ref_preds, cur_preds = predict(dx, reference), predict(dx, current)
    alpha = float(p["alpha"]) / 3
    tabular, predictions = _tabular_drift(ws, area, everyone, reference, current, ref_preds, cur_preds, p, alpha,
                                          out / "tabular.html")
    embedding = _embedding_drift(dx, reference, current, ref_preds, cur_preds, p, alpha)
    perf = performance_drift(evaluation, reference, ref_preds, current, cur_preds, p)  # drop vs its uncertainty
    flagged = sorted(set(tabular.get("drifted_sites") or []) | set(predictions.get("drifted_sites") or [])
                     | {s for _, s in embedding.get("drifted_sites") or []})
    breach = bool(tabular.get("drifted") or predictions.get("drifted") or embedding.get("drifted")
                  or perf.get("drifted"))
    report = {"model_version": model_version, "extract": Path(source).name, "area": area.root.name,
              "reference": {"split": "val+test", "patients": len(reference),
                            "dataset_version": dataset_version(ws.root).name,
                            "trained_dataset_version": bmeta.get("dataset_version")},
              "current": {"patients": len(current), "received": prepared["ingest"]["received"],
                          "quarantined": prepared["ingest"]["quarantined"] + prepared["validate"]["quarantined"]},
              "status": "drift" if breach else "ok", "flagged_sites": flagged,
              "tabular": tabular, "predictions": predictions, "embedding": embedding, "performance": perf}
    verdict.settle(report)  # drift > insufficient > ok; report["untested"]: what could not be tested, and why
    trigger = RetrainTrigger(ws.state / "monitor" / "retrain-trigger.json",
                             timedelta(hours=float(p["cooldown_hours"])))
    report["retrain"] = trigger.fire({"model_version": model_version, "sites": flagged,
                                      "extract": Path(source).name}, on_fire=queue_retrain) if breach else None
    report["findings"] = describe(report)
    verdict.settle(report)  # the final status (ok / drift / insufficient) before the pages say it
    write_reports(report, out)  # drift.json with its "verdict", drift.html per site, Evidently's page relabelled
    return report


def log_monitoring(report: dict, out: Path, model_version: str, area_name: str, attempt: Attempt) -> str:
    """The stage's MLflow run (journaled by `attempt`) with the report folder; -> its run id."""
    run_tags = {**tracking.run_tags(attempt.journal.ws.root, "monitor"),  # the reference data and code it ran on
                tags.key("model_version"): model_version, tags.key("status"): report["status"]}
    with attempt.mlflow_run(f"monitor-{area_name}", run_tags, experiment=EXPERIMENT) as run:
        mlflow.log_metrics({"drift": float(report["status"] == "drift"),
                            "flagged_sites": float(len(report["flagged_sites"])),
                            "untested": float(len(report.get("untested") or [])),
                            "current_patients": float(report["current"]["patients"])})
        mlflow.log_artifacts(str(out), artifact_path="monitoring")
        attempt.finish({"mlflow_run_id": run.info.run_id}, outputs=[out / "drift.json"])
    return run.info.run_id


def note_on_version(name: str, version: str, run_id: str, report: dict) -> None:
    """The version's `mmfm.last_monitoring` tag: the latest run, its status and flagged sites."""
    mlflow.MlflowClient().set_model_version_tag(name, version, tags.key("last_monitoring"),
                                                json.dumps({"run_id": run_id, "status": report["status"],
                                                            "sites": report["flagged_sites"]}))
