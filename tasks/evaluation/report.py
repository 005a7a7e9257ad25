"""The evaluate stage's work: measure every fine-tuned task on the held-out split (metrics with CIs, plots, Grad-CAM,
attention), train and measure the baselines, write models/evaluation/ (evaluation.json, evaluation.md, plots) and
log it as the stage's MLflow run.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import polars as pl

from data_contracts import diagnosis_names
from tasks import tags, tracking
from tasks.atomic import replace_dir, write_json, write_text
from tasks.deid import Pseudonymizer, key_from_settings
from tasks.evaluation.assess import assess
from tasks.evaluation.baselines import (
    OUTPUT,
    bayes,
    comparisons,
    demographics,
    embedding_features,
    late_fusion,
    oracle,
    same_inputs,
    single_modality,
)
from tasks.evaluation.explain import attention_table, gradcam, save_gradcam_png
from tasks.evaluation.plots import calibration_plot, roc_plot, survival_by_risk_plot
from tasks.faults import kill_point
from tasks.stage.run import Attempt
from tasks.training.backbone import train_config
from tasks.training.bundle import load_adapter, load_backbone
from tasks.training.curated_dataset import dataset_config
from tasks.training.fit import predict
from tasks.training.split_data import load_split
from tasks.versioning.dataset import DatasetVersion
from tasks.workspace import Workspace

CLASS_NAMES = diagnosis_names()  # data_contracts/labels.yaml
SPLIT = "test"


def finetuned_tasks(ws: Workspace) -> list[str]:
    """The tasks models/finetuned/ holds an adapter for (refuses none)."""
    root = ws.models / "finetuned"
    tasks = sorted(d.name for d in root.iterdir() if (d / "meta.json").exists()) if root.exists() else []
    if not tasks:
        raise FileNotFoundError(f"{root}: no fine-tuned task: run `mmfm finetune` first")
    return tasks


def load_test(ws: Workspace):
    """(tokenizer, the held-out split) read with the backbone's tokenizer."""
    _, tokenizer, bmeta = load_backbone(ws.models / "backbone")
    try:
        return tokenizer, load_split(ws.curated, SPLIT, tokenizer, dataset_config(bmeta))
    except ValueError:
        raise ValueError(f"the {SPLIT} split of {ws.curated} has no patients: the cohort is too small for "
                         f"params.yaml validate.splits") from None


def _plots(out: Path, task_name: str, y, preds: dict, model, test, n_cam: int) -> list[str]:
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
        files.append(roc_plot(y, preds["risk_prob"], ["alive at one year", "died within one year"],
                              out / "plots" / "roc_risk.png"))
        files.append(calibration_plot(y, preds["risk_prob"], out / "plots" / "calibration_risk.png"))
    elif task_name == "survival":
        files.append(survival_by_risk_plot(test.tensors["time"].numpy(), test.tensors["event"].numpy(),
                                           preds["log_risk"], out / "plots" / "survival_by_risk.png"))
    return [str(Path(f).relative_to(out)) for f in files]


def evaluate_one(ws: Workspace, task_name: str, test, p: dict, out: Path) -> dict:
    """One task's report (metrics, subgroups, modality removal) with its plots written under `out`."""
    model, _, meta = load_adapter(ws.models / "finetuned" / task_name, ws.models / "backbone")
    result = assess(model, test, task_name, n_boot=int(p["n_boot"]), min_group=int(p["min_group"]))
    report = result["report"]
    report["finetune_run_id"] = meta.get("mlflow_run_id")
    y = test.tensors["label" if task_name == "diagnosis" else "risk_label"].numpy()
    report["files"] = _plots(out, task_name, y, result["preds"], model, test, int(p["gradcam_patients"]))
    return report


def baselines(ws: Workspace, test, tokenizer, p: dict, cohort: Path | None) -> dict:
    """Single-modality and late-fusion baselines (diagnosis) and a logistic / Cox model on the same inputs (risk,
    survival) trained here; the generator's Bayes posterior and exact hazard when synthetic; `comparisons`: fused
    minus each baseline, paired on the same patients (what the promotion gate judges)."""
    backbone, _, bmeta = load_backbone(ws.models / "backbone")
    tasks = [t for t in finetuned_tasks(ws) if t in OUTPUT]
    models = {t: load_adapter(ws.models / "finetuned" / t, ws.models / "backbone")[0] for t in tasks}
    fused = {t: predict(m, test)[OUTPUT[t]] for t, m in models.items()}  # each fine-tuned model on the test split
    train, val = (load_split(ws.curated, s, tokenizer, dataset_config(bmeta)) for s in ("train", "val"))
    ft = ws.section("finetune")
    cfg = train_config({**ft, "steps": p["baseline_steps"], "lr": ws.section("pretrain")["lr"]}, "diagnosis")
    n_boot = int(p["n_boot"])
    embedded = embedding_features(backbone, train), embedding_features(backbone, test)
    out = {"single_modality": single_modality(bmeta["model"], train, val, test, models["diagnosis"], cfg,
                                              list(models["diagnosis"].modalities), n_boot,
                                              int(ft.get("eval_every", 0))),
           "late_fusion": late_fusion(backbone, train, test, n_boot, fused_probs=fused["diagnosis"],
                                      features=embedded)}
    demo_train, demo_test, source = demographics(train, test)
    features = np.hstack([embedded[0], demo_train]), np.hstack([embedded[1], demo_test])
    for task in (t for t in ("risk", "survival") if t in fused):
        out[f"{task}_same_inputs"] = {**same_inputs(task, train, test, features, fused[task], n_boot),
                                      "demographics": source}
    # synthetic cohorts carry the generator's truth: the given one, else every one among the workspace's extracts
    cohorts = [Path(cohort)] if cohort else sorted(t.parent.parent for t in ws.extracts.glob("*/truth/patients.tsv"))
    if cohorts:
        try:
            keys = Pseudonymizer(key_from_settings())
        except Exception as exc:  # noqa: BLE001 - the comparison is optional; say why it is missing
            out["bayes"] = out["oracle"] = {"skipped": f"no pseudonym key to match the truth file "
                                                       f"({type(exc).__name__})"}
        else:
            out["bayes"] = bayes(test, cohorts, keys, n_boot, fused_probs=fused["diagnosis"])
            out["oracle"] = oracle(test, cohorts, keys, n_boot, {t: fused[t] for t in ("risk", "survival")
                                                                 if t in fused})
    out["comparisons"] = comparisons(out, tasks)
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


def comparison_metrics(base: dict | None) -> dict[str, float]:
    """task.vs_<baseline>.diff (+ .ci_low/.ci_high): the paired differences, measured ones only."""
    out = {}
    for task, rows in ((base or {}).get("comparisons") or {}).items():
        for name, d in rows.items():
            for part, suffix in (("value", ""), ("ci_low", ".ci_low"), ("ci_high", ".ci_high")):
                if d.get(part) is not None:
                    out[f"{task}.vs_{name}.diff{suffix}"] = d[part]
    return out


def comparison_lines(base: dict | None) -> list[str]:
    """The paired comparisons as a Markdown table (fused minus baseline, same patients)."""
    rows = [(task, name, d) for task, ds in ((base or {}).get("comparisons") or {}).items() for name, d in ds.items()]
    if not rows:
        return []
    lines = ["## Fused model minus baselines (paired bootstrap, same patients)", "",
             "| task | baseline | metric | fused | baseline | difference | 95% CI | patients |",
             "|---|---|---|---|---|---|---|---|"]
    for task, name, d in rows:
        label = f"{name} ({d['baseline']})" if d.get("baseline") not in (None, name) else name
        lines.append(f"| {task} | {label} | {d.get('metric', '')} | {d.get('a', '')} | {d.get('b', '')} | "
                     + (f"{d['value']} | {d['ci_low']}–{d['ci_high']} | {d['n']} |" if "value" in d
                        else f"not measured: {d.get('skipped')} | | |"))
    return [*lines, ""]


def markdown(summary: dict) -> str:
    lines = [f"# Evaluation on the {SPLIT} split of dataset {summary['dataset_version']}", ""]
    for name, rep in summary["tasks"].items():
        lines += [f"## {name} ({rep['patients']} patients)", "", "| metric | value | 95% CI |", "|---|---|---|"]
        lines += [f"| {k} | {v['value']} | {v['ci_low']}–{v['ci_high']} |" for k, v in rep["metrics"].items()]
        lines += ["", f"Without one modality ({rep['primary_metric']}): " + ", ".join(
            f"{m} {r.get(rep['primary_metric'], {}).get('value', r.get('skipped'))}"
            for m, r in rep["without_modality"].items()), ""]
    lines += comparison_lines(summary.get("baselines"))
    return "\n".join(lines) + "\n"


def kept_summary(ws: Workspace) -> dict:
    """The summary a finished run published (reused when a kill came before its ledger event)."""
    return json.loads((ws.models / "evaluation" / "evaluation.json").read_text())


def publish_evaluation(ws: Workspace, data: DatasetVersion, test, reports: dict, extra: dict, incoming: Path,
                       attempt: Attempt) -> dict:
    """Write evaluation.json/.md into `incoming`, log the stage's MLflow run (journaled by `attempt`) and publish
    models/evaluation; -> the summary."""
    summary = {"split": SPLIT, **data.facts(), "test_patients": len(test), "test_counts": test.counts(),
               "tasks": reports, **extra}
    write_json(incoming / "evaluation.json", summary)
    write_text(incoming / "evaluation.md", markdown(summary))
    run_tags = {**tracking.run_tags(ws.root, "evaluate", data.facts()), tags.SPLIT: SPLIT,
                **{f"{tags.FINETUNE_RUN_ID}.{t}": str(r["finetune_run_id"]) for t, r in reports.items()}}
    with attempt.mlflow_run("evaluate", run_tags) as run:
        mlflow.log_metrics(mlflow_metrics(reports) | comparison_metrics(extra.get("baselines")))
        mlflow.log_artifacts(str(incoming), artifact_path="evaluation")
        summary["mlflow_run_id"] = run.info.run_id
        write_json(incoming / "evaluation.json", summary)
        replace_dir(incoming, ws.models / "evaluation")
        attempt.finish({"mlflow_run_id": run.info.run_id}, outputs=[ws.models / "evaluation"])
    kill_point("evaluate.after_run")
    return summary
