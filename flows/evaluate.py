"""`mmfm evaluate`: every fine-tuned task on the held-out test split, with the baselines trained in the same run.

Writes models/evaluation/: evaluation.json (metrics with bootstrap CIs; per site, sex and age band; with each
modality removed; attention share per modality; single-modality and late-fusion baselines; the generator's Bayes
posterior when the cohort is synthetic), evaluation.md, ROC and calibration plots, Grad-CAM PNGs and the per-patient
attention table. One MLflow run ("evaluate") carries the same numbers, the dataset version it was measured on and
the fine-tuning runs it measured; the ledger gets an `evaluate` event.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.run_names import run_name
from tasks import tracking
from tasks.atomic import fresh_dir
from tasks.evaluation import report
from tasks.evaluation.report import SPLIT
from tasks.lineage import artifact_sha256
from tasks.stage.run import run_key, stage_run
from tasks.validation.curated_check import check_curated
from tasks.versioning.dataset import current
from tasks.workspace import Workspace


@task(name="evaluate-task", cache_policy=NO_CACHE)
def evaluate_task(ws: Workspace, task_name: str, test, p: dict, out: Path) -> dict:
    return report.evaluate_one(ws, task_name, test, p, out)


@task(name="baselines", cache_policy=NO_CACHE)
def baselines_task(ws: Workspace, test, tokenizer, p: dict, cohort: Path | None) -> dict:
    return report.baselines(ws, test, tokenizer, p, cohort)


@flow(name="evaluate", flow_run_name=run_name("evaluate"))
def evaluate_flow(workspace: Path, cohort: Path | None = None, baselines: bool | None = None) -> dict:
    with stage_run(workspace, "evaluate") as run:
        ws, log = run.ws, get_run_logger()
        check_curated(ws.root)  # refuse data changed since validate, before any training
        p = ws.section("evaluate", baselines=baselines)
        data = current(ws.root)
        tasks = report.finetuned_tasks(ws)
        tokenizer, test = report.load_test(ws)
        models = {m: artifact_sha256(ws.models / m) for m in ("backbone", "finetuned")}  # what is measured
        attempt = run.attempt(run_key("evaluate", {**p, "cohort": str(cohort or ""), **models}, data.curated_md5))
        if attempt.reused:  # finished and logged by a run killed before its ledger event: record it, measure nothing
            summary = report.kept_summary(ws)
            log.info("evaluated: kept from an interrupted run (MLflow run %s)", summary["mlflow_run_id"])
        else:
            incoming = fresh_dir(ws.models / "evaluation")
            (incoming / "plots").mkdir()
            reports = {t: evaluate_task(ws, t, test, p, incoming) for t in tasks}
            extra = {"baselines": baselines_task(ws, test, tokenizer, p, cohort)} \
                if p["baselines"] and "diagnosis" in reports else {}
            summary = report.publish_evaluation(ws, data, test, reports, extra, incoming, attempt)
        tracking.describe_run(summary["mlflow_run_id"], params=p, facts=data.facts(), context="testing")
        reports = summary["tasks"]
        event = run.record(inputs=[ws.curated, ws.models / "backbone", ws.models / "finetuned"],
                           outputs=[ws.models / "evaluation"], params=p,
                           facts={"split": SPLIT, "dataset_version": data.name,
                                  "mlflow_run_id": summary["mlflow_run_id"],
                                  "primary": {t: r["metrics"][r["primary_metric"]]["value"]
                                              for t, r in reports.items()}})
    summary["lineage_event"] = event.event_id
    summary["report"] = str(ws.models / "evaluation" / "evaluation.md")
    log.info("evaluated %s on %d test patients", ", ".join(tasks), len(test))
    return summary


def run(workspace: Path) -> dict:
    return evaluate_flow(workspace)


if __name__ == "__main__":  # `dvc repro` runs `python -m flows.evaluate` in the workspace
    from tasks.settings import quiet_telemetry

    quiet_telemetry()
    print(json.dumps(run(Path.cwd()), default=str))
