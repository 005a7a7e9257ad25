"""`mmfm monitor SOURCE`: does the champion still see the data it was trained on?

The extract crosses the same ingest, de-identification and validation path into a monitoring area (flows/area.py:
never training data) and is scored by the champion (hash-verified at load). Compared with the curated dataset the
champion was trained on: tabular drift of labs/vitals, demographics and image acquisition (scanner, intensity;
Evidently, KS / two-sample chi-square, Bonferroni over features x sites; vs every curated patient: no model involved);
against its held-out val + test patients only: prediction drift (the class probabilities, same tests) and embedding
drift per modality and site (MMD permutation test on the backbone's per-modality embeddings); performance drift when
the extract carries outcomes. Reports: data/monitoring/<area>/drift.json + tabular.html; an MLflow run tagged with the
model version; a ledger event; a Prefect event. A breach fires the retraining trigger (params.yaml
monitor.cooldown_hours) which runs the `retrain` deployment when one exists on the Prefect API, else emits the
`mmfm.retrain.requested` event for an automation to act on.
"""

from __future__ import annotations

import json
import tempfile
from datetime import timedelta
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from tasks.run_journal import RunJournal
from tasks.workspace import Workspace, lock_hash

EXPERIMENT = "mmfm-monitoring"
RETRAIN_DEPLOYMENT = "pipeline/retrain"


def _queue_retrain(reason: dict) -> dict:
    """Start the retraining deployment if the Prefect API has one; always emit the event automations listen to."""
    from prefect.events import emit_event

    emit_event(event="mmfm.retrain.requested", resource={"prefect.resource.id": "mmfm.model"},
               payload={k: v for k, v in reason.items() if k != "report"})
    try:
        from prefect.deployments import run_deployment

        run = run_deployment(RETRAIN_DEPLOYMENT, timeout=0)
        return {"queued": "deployment", "flow_run_id": str(run.id)}
    except Exception as exc:  # noqa: BLE001 - no deployment on an ephemeral API: the event is the request
        return {"queued": "event", "detail": f"no deployment {RETRAIN_DEPLOYMENT} ({type(exc).__name__})"}


def _performance(task_report_primary: float | None, data, preds: dict, tolerance: float) -> dict:
    from tasks.evaluation.assess import headline

    labelled = int((data.tensors["label"] >= 0).sum())
    if labelled < 20 or task_report_primary is None:
        return {"status": "no outcomes", "labelled": labelled}
    now = headline("diagnosis", data, preds, n_boot=100)["auroc_macro"]["value"]
    drop = None if now is None else round(task_report_primary - now, 4)
    return {"status": "measured", "labelled": labelled, "auroc_macro": now, "at_evaluation": task_report_primary,
            "drop": drop, "tolerance": tolerance, "drifted": bool(drop is not None and drop > tolerance)}


@flow(name="monitor")
def monitor_flow(workspace: Path, source: Path, model: str = "mmfm-multimodal@champion") -> dict:
    import mlflow

    from flows.area import prepare_area
    from flows.pretrain import run_key
    from flows.registry import _parse
    from tasks import tracking
    from tasks.lineage import record

    ws = Workspace(Path(workspace).resolve())
    p = ws.section("monitor")
    log = get_run_logger()
    tracking.configure(ws.root)
    name, version = _parse(model, mlflow.MlflowClient())
    prepared = prepare_area(ws, Path(source), "monitoring")
    area = prepared["area"]
    out = ws.root / "data" / "monitoring" / area.root.name
    out.mkdir(parents=True, exist_ok=True)
    data = f"{lock_hash(area.root, 'validate', 'data/curated')}+{lock_hash(ws.root, 'validate', 'data/curated')}"
    journal = RunJournal(ws, f"monitor-{area.root.name}", "monitor",
                         run_key("monitor", {"model": f"{name}/{version}", **p}, data))
    if done := journal.recover():  # reported and logged by a run killed before its ledger event
        report, run_id = json.loads((out / "drift.json").read_text()), done["result"]["mlflow_run_id"]
        log.info("monitoring %s: kept from an interrupted run (MLflow run %s)", Path(source).name, run_id)
    else:
        report = _drift_report(ws, p, name, version, prepared, out, Path(source))
        with mlflow.start_run(experiment_id=tracking.experiment_id(ws.root, EXPERIMENT),
                              run_name=f"monitor-{area.root.name}",
                              tags={"mmfm.stage": "monitor", "mmfm.model_version": f"{name}/{version}",
                                    "mmfm.status": report["status"]}) as run:
            journal.start(run.info.run_id)
            mlflow.log_metrics({"drift": float(report["status"] == "drift"),
                                "flagged_sites": float(len(report["flagged_sites"])),
                                "current_patients": float(report["current"]["patients"])})
            mlflow.log_artifacts(str(out), artifact_path="monitoring")
            journal.finish({"mlflow_run_id": run.info.run_id}, outputs=[out / "drift.json"])
        run_id = run.info.run_id
    flagged = report["flagged_sites"]
    mlflow.MlflowClient().set_model_version_tag(name, version, "mmfm.last_monitoring",
                                                json.dumps({"run_id": run_id, "status": report["status"],
                                                            "sites": flagged}))
    event = record(ws, "monitor", str(flow_run.id or run_id), inputs=[area.curated, ws.curated],
                   outputs=[out / "drift.json"], params={"model": f"{name}/{version}", **p},
                   facts={"status": report["status"], "flagged_sites": flagged, "mlflow_run_id": run_id,
                          "retrain": (report["retrain"] or {}).get("status")})
    journal.clear()
    report |= {"mlflow_run_id": run_id, "lineage_event": event.event_id, "report": str(out / "drift.json")}
    log.log(30 if report["status"] == "drift" else 20, "monitoring %s: %s%s", Path(source).name, report["status"],
            f" ({report['findings']})" if report["findings"] else "")
    return report


def _drift_report(ws: Workspace, p: dict, name: str, version: str, prepared: dict, out: Path, source: Path) -> dict:
    """Score the prepared area with the (hash-verified) model, test every drift family, fire the retraining
    trigger on a breach, and write out/drift.json (+ tabular.html); -> the report."""
    from flows.registry import load_verified
    from tasks import tracking
    from tasks.monitoring.embedding_drift import embedding_drift
    from tasks.monitoring.features import patient_features
    from tasks.monitoring.findings import describe
    from tasks.monitoring.tabular_drift import tabular_drift
    from tasks.monitoring.trigger import RetrainTrigger
    from tasks.training.bundle import load_backbone
    from tasks.training.data import load_split
    from tasks.training.dataset import DatasetConfig
    from tasks.training.fit import predict

    area = prepared["area"]
    with tempfile.TemporaryDirectory(dir=ws.state) as tmp:
        load_verified(f"{name}/{version}", Path(tmp))  # refuses tampered artifacts
        bundle = next(Path(tmp).rglob("bundle"))
        from tasks.training.bundle import load_adapter

        dx, tokenizer, _ = load_adapter(bundle / "finetuned" / "diagnosis", bundle / "backbone")
        _, _, bmeta = load_backbone(bundle / "backbone")
        evaluation = json.loads(next(Path(tmp).rglob("evaluation/evaluation.json")).read_text())
    cfg = DatasetConfig(genes=tuple(bmeta["omics_genes"]) if bmeta.get("omics_genes") else None)
    # reference: the held-out patients of the training data (val + test); the model has fitted its training patients,
    # so their embeddings and predictions are not what it produces on patients it has never seen
    everyone = load_split(ws.curated, None, tokenizer, cfg)
    reference = everyone.take([i for i, s in enumerate(everyone.meta["split"]) if s in ("val", "test")])
    current = load_split(area.curated, None, tokenizer, cfg)
    ref_preds, cur_preds = predict(dx, reference), predict(dx, current)
    cur_frame, groups = patient_features(current, cur_preds, curated=area.curated)
    # three test families share alpha (Bonferroni): the data itself (vs every curated patient: no model involved),
    # the model's predictions and its embeddings (vs the held-out patients only)
    alpha, min_rows, same_site = float(p["alpha"]) / 3, int(p["min_rows"]), int(p["min_reference_rows"])
    data_groups = {g: cols for g, cols in groups.items() if g != "predictions"}
    ref_frame = patient_features(everyone, curated=ws.curated)[0]
    tabular = tabular_drift(ref_frame, cur_frame, data_groups, alpha=alpha, min_rows=min_rows,
                            html_path=out / "tabular.html", max_rows=p.get("max_rows"), same_site_min=same_site)
    predictions = tabular_drift(patient_features(reference, ref_preds)[0], cur_frame,
                                {"predictions": groups["predictions"]}, alpha=alpha, min_rows=min_rows,
                                max_rows=p.get("max_rows"), same_site_min=same_site)
    sites = [str(s) for s in current.meta["site"]]
    ref_site_list = [str(s) for s in reference.meta["site"]]
    ref_emb, cur_emb, cur_sites, ref_sites = {}, {}, {}, {}
    for m in dx.modalities:
        r, c = ref_preds[f"present_{m}"], cur_preds[f"present_{m}"]
        ref_emb[m], cur_emb[m] = ref_preds[f"unimodal_{m}"][r], cur_preds[f"unimodal_{m}"][c]
        cur_sites[m] = [s for s, keep in zip(sites, c, strict=True) if keep]
        ref_sites[m] = [s for s, keep in zip(ref_site_list, r, strict=True) if keep]
    embedding = embedding_drift(ref_emb, cur_emb, cur_sites, alpha=alpha, min_rows=min_rows,
                                n_permutations=int(p["n_permutations"]), ref_sites=ref_sites,
                                min_ref_rows=same_site)
    primary = evaluation["tasks"]["diagnosis"]["metrics"]["auroc_macro"]["value"]
    performance = _performance(primary, current, cur_preds, float(p["performance_tolerance"]))
    flagged = sorted(set(tabular.get("drifted_sites") or []) | set(predictions.get("drifted_sites") or [])
                     | {s for _, s in embedding.get("drifted_sites") or []})
    breach = bool(tabular.get("drifted") or predictions.get("drifted") or embedding.get("drifted")
                  or performance.get("drifted"))
    report = {"model_version": f"{name}/{version}", "extract": Path(source).name, "area": area.root.name,
              "reference": {"split": "val+test", "patients": len(reference),
                            "dataset_version": tracking.dataset_facts(ws.root)["dataset_version"],
                            "trained_dataset_version": bmeta.get("dataset_version")},
              "current": {"patients": len(current), "received": prepared["ingest"]["received"],
                          "quarantined": prepared["ingest"]["quarantined"] + prepared["validate"]["quarantined"]},
              "status": "drift" if breach else "ok", "flagged_sites": flagged,
              "tabular": tabular, "predictions": predictions, "embedding": embedding, "performance": performance}
    trigger = RetrainTrigger(ws.state / "monitor" / "retrain-trigger.json",
                             timedelta(hours=float(p["cooldown_hours"])))
    report["retrain"] = trigger.fire({"model_version": f"{name}/{version}", "sites": flagged,
                                      "extract": Path(source).name}, on_fire=_queue_retrain) if breach else None
    report["findings"] = describe(report)
    (out / "drift.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    return report
