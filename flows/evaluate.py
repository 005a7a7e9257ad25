"""`mmfm evaluate`: every fine-tuned task on the held-out test split, with the baselines trained in the same run.

Writes models/evaluation/: evaluation.json (metrics with bootstrap CIs; per site, sex and age band; with each
modality removed; attention share per modality; single-modality and late-fusion baselines; the generator's Bayes
posterior when the cohort is synthetic), evaluation.md, ROC and calibration plots, Grad-CAM PNGs and the per-patient
attention table. One MLflow run ("evaluate") carries the same numbers, the dataset version it was measured on and
the fine-tuning runs it measured; the ledger gets an `evaluate` event.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from data_contracts import diagnosis_names
from flows.pretrain import EXPERIMENT, replace_dir, run_key, train_config
from tasks.faults import kill_point
from tasks.run_journal import RunJournal
from tasks.validation.curated_check import check_curated
from tasks.workspace import Workspace
from tasks.workspace_lock import holds_workspace_lock

CLASS_NAMES = diagnosis_names()  # data_contracts/labels.yaml
SPLIT = "test"


def _plots(out: Path, task_name: str, y, preds: dict, model, test, n_cam: int) -> list[str]:
    import numpy as np
    import polars as pl

    from tasks.evaluation.explain import attention_table, gradcam, save_gradcam_png
    from tasks.evaluation.plots import calibration_plot, roc_plot

    files = []
    if task_name == "diagnosis":
        files.append(roc_plot(y, preds["class_probs"], CLASS_NAMES, out / "plots" / "roc_diagnosis.png"))
        files.append(calibration_plot(y, preds["class_probs"], out / "plots" / "calibration_diagnosis.png"))
        rows = attention_table(test.meta["patient_id"],
                               {m: preds[f"attention_{m}"] for m in model.modalities},
                               {m: preds[f"present_{m}"] for m in model.modalities})
        pl.DataFrame(rows).write_parquet(out / "attention.parquet")
        files.append(out / "attention.parquet")
        for modality in ("image_2d", "image_3d"):
            if modality not in test.tensors or modality not in model.modalities:
                continue
            has = np.flatnonzero(test.tensors["mask"][:, ("image_3d", "image_2d").index(modality)].numpy())[:n_cam]
            if not len(has):
                continue
            images = test.tensors[modality][has]
            cams = gradcam(model, {modality: images}, modality)
            for i, cam in zip(has, cams, strict=True):
                name = f"gradcam_{modality}_{test.meta['patient_id'][i][:12]}.png"
                files.append(save_gradcam_png(images[list(has).index(i), 0].numpy(), cam, out / "gradcam" / name))
    elif task_name == "risk":
        files.append(calibration_plot(y, preds["risk_prob"], out / "plots" / "calibration_risk.png"))
    return [str(Path(f).relative_to(out)) for f in files]


@task(name="evaluate-task", cache_policy=NO_CACHE)
def evaluate_task(ws: Workspace, task_name: str, test, p: dict, out: Path) -> dict:
    from tasks.evaluation.assess import assess
    from tasks.training.bundle import load_adapter

    model, _, meta = load_adapter(ws.models / "finetuned" / task_name, ws.models / "backbone")
    result = assess(model, test, task_name, n_boot=int(p["n_boot"]), min_group=int(p["min_group"]))
    report = result["report"]
    report["finetune_run_id"] = meta.get("mlflow_run_id")
    y = test.tensors["label" if task_name == "diagnosis" else "risk_label"].numpy()
    report["files"] = _plots(out, task_name, y, result["preds"], model, test, int(p["gradcam_patients"]))
    return report


@task(name="baselines", cache_policy=NO_CACHE)
def baselines_task(ws: Workspace, test, tokenizer, p: dict, cohort: Path | None) -> dict:
    from tasks.evaluation.baselines import bayes, late_fusion, single_modality
    from tasks.training.bundle import load_adapter, load_backbone
    from tasks.training.data import load_split

    backbone, _, bmeta = load_backbone(ws.models / "backbone")
    fused, _, _ = load_adapter(ws.models / "finetuned" / "diagnosis", ws.models / "backbone")
    train, val = load_split(ws.curated, "train", tokenizer), load_split(ws.curated, "val", tokenizer)
    ft = ws.section("finetune")
    cfg = train_config({**ft, "steps": p["baseline_steps"], "lr": ws.section("pretrain")["lr"]}, "diagnosis")
    n_boot = int(p["n_boot"])
    out = {"single_modality": single_modality(bmeta["model"], train, val, test, fused, cfg, list(fused.modalities),
                                              n_boot, int(ft.get("eval_every", 0))),
           "late_fusion": late_fusion(backbone, train, test, n_boot)}
    # synthetic cohorts carry the generator's truth: the given one, else every one among the workspace's extracts
    cohorts = [Path(cohort)] if cohort else sorted(t.parent.parent for t in ws.extracts.glob("*/truth/patients.tsv"))
    if cohorts:
        from tasks.deid import Pseudonymizer, key_from_settings

        try:
            keys = Pseudonymizer(key_from_settings())
        except Exception as exc:  # noqa: BLE001 - the comparison is optional; say why it is missing
            out["bayes"] = {"skipped": f"no pseudonym key to match the truth file ({type(exc).__name__})"}
        else:
            out["bayes"] = bayes(test, cohorts, keys, n_boot)
    return out


def mlflow_metrics(reports: dict) -> dict[str, float]:
    """task.metric (+ .ci_low/.ci_high) and task.without_<modality>.metric, the measured values only."""
    out = {}
    for task_name, rep in reports.items():
        for metric, v in rep["metrics"].items():
            for part, suffix in (("value", ""), ("ci_low", ".ci_low"), ("ci_high", ".ci_high")):
                if v.get(part) is not None:
                    out[f"{task_name}.{metric}{suffix}"] = v[part]
        for modality, res in rep["without_modality"].items():
            for metric, v in res.items():
                if isinstance(v, dict) and v.get("value") is not None:
                    out[f"{task_name}.without_{modality}.{metric}"] = v["value"]
    return out


def _markdown(summary: dict) -> str:
    lines = [f"# Evaluation on the {SPLIT} split of dataset {summary['dataset_version']}", ""]
    for name, rep in summary["tasks"].items():
        lines += [f"## {name} ({rep['patients']} patients)", "", "| metric | value | 95% CI |", "|---|---|---|"]
        lines += [f"| {k} | {v['value']} | {v['ci_low']}–{v['ci_high']} |" for k, v in rep["metrics"].items()]
        lines += ["", f"Without one modality ({rep['primary_metric']}): " + ", ".join(
            f"{m} {r.get(rep['primary_metric'], {}).get('value', r.get('skipped'))}"
            for m, r in rep["without_modality"].items()), ""]
    return "\n".join(lines) + "\n"


@flow(name="evaluate")
@holds_workspace_lock("mmfm evaluate")
def evaluate_flow(workspace: Path, cohort: Path | None = None, baselines: bool | None = None) -> dict:
    from tasks import tracking
    from tasks.lineage import artifact_sha256, record
    from tasks.training.bundle import load_backbone
    from tasks.training.data import load_split

    ws = Workspace(Path(workspace).resolve())
    check_curated(ws.root)  # refuse data changed since validate, before any training
    p = ws.section("evaluate", baselines=baselines)
    facts = tracking.dataset_facts(ws.root)
    tasks = sorted(d.name for d in (ws.models / "finetuned").iterdir() if (d / "meta.json").exists()) \
        if (ws.models / "finetuned").exists() else []
    if not tasks:
        raise FileNotFoundError(f"{ws.models / 'finetuned'}: no fine-tuned task: run `mmfm finetune` first")
    _, tokenizer, _ = load_backbone(ws.models / "backbone")
    try:
        test = load_split(ws.curated, SPLIT, tokenizer)
    except ValueError:
        raise ValueError(f"the {SPLIT} split of {ws.curated} has no patients: the cohort is too small for "
                         f"params.yaml validate.splits") from None
    tracking.configure(ws.root)
    models = {m: artifact_sha256(ws.models / m) for m in ("backbone", "finetuned")}  # what is measured
    journal = RunJournal(ws, "evaluate", "evaluate", run_key("evaluate", {**p, "cohort": str(cohort or ""), **models},
                                                             facts["curated_md5"]))
    done = journal.recover()
    if done:  # finished and logged by a run killed before its ledger event: record that run, measure nothing
        summary = json.loads((ws.models / "evaluation" / "evaluation.json").read_text())
        get_run_logger().info("evaluated: kept from an interrupted run (MLflow run %s)", summary["mlflow_run_id"])
    else:
        summary = _measure_and_log(ws, p, facts, tasks, tokenizer, test, cohort, journal)
    reports = summary["tasks"]
    event = record(ws, "evaluate", str(flow_run.id or summary["mlflow_run_id"]),
                   inputs=[ws.curated, ws.models / "backbone", ws.models / "finetuned"],
                   outputs=[ws.models / "evaluation"], params=p,
                   facts={"split": SPLIT, "dataset_version": facts["dataset_version"],
                          "mlflow_run_id": summary["mlflow_run_id"],
                          "primary": {t: r["metrics"][r["primary_metric"]]["value"] for t, r in reports.items()}})
    journal.clear()
    summary["lineage_event"] = event.event_id
    summary["report"] = str(ws.models / "evaluation" / "evaluation.md")
    get_run_logger().info("evaluated %s on %d test patients", ", ".join(tasks), len(test))
    return summary


def _measure_and_log(ws: Workspace, p: dict, facts: dict, tasks: list[str], tokenizer, test, cohort: Path | None,
                     journal: RunJournal) -> dict:
    """Measure every task (and the baselines), publish models/evaluation and log the MLflow run; -> the summary."""
    import mlflow

    from tasks import tracking

    incoming = ws.models / ".evaluation-incoming"
    shutil.rmtree(incoming, ignore_errors=True)
    (incoming / "plots").mkdir(parents=True)
    reports = {t: evaluate_task(ws, t, test, p, incoming) for t in tasks}
    summary = {"split": SPLIT, **facts, "test_patients": len(test), "test_counts": test.counts(), "tasks": reports}
    if p["baselines"] and "diagnosis" in reports:
        summary["baselines"] = baselines_task(ws, test, tokenizer, p, cohort)
    (incoming / "evaluation.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    (incoming / "evaluation.md").write_text(_markdown(summary))
    tags = {**tracking.run_tags(ws.root, "evaluate", facts), "mmfm.split": SPLIT,
            **{f"mmfm.finetune_run_id.{t}": str(r["finetune_run_id"]) for t, r in reports.items()}}
    with mlflow.start_run(experiment_id=tracking.experiment_id(ws.root, EXPERIMENT), run_name="evaluate",
                          tags=tags) as run:
        journal.start(run.info.run_id)
        mlflow.log_metrics(mlflow_metrics(reports))
        mlflow.log_artifacts(str(incoming), artifact_path="evaluation")
        summary["mlflow_run_id"] = run.info.run_id
        (incoming / "evaluation.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
        replace_dir(incoming, ws.models / "evaluation")
        journal.finish({"mlflow_run_id": run.info.run_id}, outputs=[ws.models / "evaluation"])
    kill_point("evaluate.after_run")
    return summary


def run(workspace: Path) -> dict:
    return evaluate_flow(workspace)


if __name__ == "__main__":  # `dvc repro` runs `python -m flows.evaluate` in the workspace
    from tasks.settings import quiet_telemetry

    quiet_telemetry()
    print(json.dumps(run(Path.cwd()), default=str))
