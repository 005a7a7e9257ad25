"""A fine-tuned model on the held-out split: headline metrics with bootstrap CIs, per site and subgroup, with each
modality removed at test time, and the per-modality attention share: what a model card and the promotion gate read.
"""

from __future__ import annotations

import numpy as np

from models.model import MODALITIES
from tasks.evaluation.metrics import HEADLINE, by_group, max_gap, metrics_with_ci
from tasks.training.fit import predict
from tasks.training.split_data import SplitData

KIND = {"diagnosis": "multiclass", "risk": "binary", "survival": "survival"}
PRIMARY = {"multiclass": "auroc_macro", "binary": "auroc", "survival": "c_index"}
SUBGROUPS = ("site", "sex", "age_band")


def task_arrays(task: str, data: SplitData, preds: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """The (target, prediction) arrays metrics_with_ci takes for the task."""
    t = data.tensors
    if task == "diagnosis":
        return t["label"].numpy(), preds["class_probs"]
    if task == "risk":
        return t["risk_label"].numpy(), preds["risk_prob"]
    if task == "survival":
        return t["time"].numpy(), t["event"].numpy().astype(bool), preds["log_risk"]
    raise ValueError(f"unknown task {task!r}")


def _values(metrics: dict) -> dict:
    return {k: {kk: (None if v[kk] is None or not np.isfinite(v[kk]) else round(float(v[kk]), 4))
                for kk in ("value", "ci_low", "ci_high")} for k, v in metrics.items()}


def headline(task: str, data: SplitData, preds: dict, n_boot: int, seed: int = 0) -> dict:
    """metric -> {value, ci_low, ci_high}; None values (and the reason) when the split cannot measure them, e.g.
    no labelled patient, rather than failing the whole evaluation."""
    try:
        return _values(metrics_with_ci(KIND[task], *task_arrays(task, data, preds), n_boot=n_boot, seed=seed))
    except ValueError as exc:
        return {m: {"value": None, "ci_low": None, "ci_high": None, "unmeasured": str(exc)}
                for m in HEADLINE[KIND[task]]}


def assess(model, test: SplitData, task: str, n_boot: int = 200, min_group: int = 20, seed: int = 0) -> dict:
    """Everything measured for one task on `test`; `preds` (numpy) is returned beside the report for plots."""
    kind = KIND[task]
    primary = PRIMARY[kind]
    preds = predict(model, test)
    arrays = task_arrays(task, test, preds)
    report: dict = {"task": task, "kind": kind, "primary_metric": primary, "patients": len(test),
                    "metrics": headline(task, test, preds, n_boot, seed)}
    subgroups, gaps = {}, {}
    for family in SUBGROUPS:
        groups = by_group(test.meta[family], kind, *arrays, min_n=min_group, n_boot=n_boot, seed=seed)
        subgroups[family] = {g: ({"n": r["n"], "skipped": r["skipped"]} if "skipped" in r else
                                 {"n": r["n"], **_values({k: v for k, v in r.items() if isinstance(v, dict)})})
                             for g, r in groups.items()}
        gap = max_gap(groups, primary)
        gaps[family] = None if gap is None else round(float(gap), 4)
    report["subgroups"], report["subgroup_gaps"] = subgroups, gaps
    missing = {}
    for m in model.modalities:
        if not bool(test.tensors["mask"][:, _column(m)].any()):
            missing[m] = {"skipped": "no test patient has it"}
            continue
        ablated = test.without(m)
        missing[m] = headline(task, ablated, predict(model, ablated), n_boot, seed)
    report["without_modality"] = missing
    report["attention_share"] = {m: round(float(np.mean(preds[f"attention_{m}"][preds[f"present_{m}"]])), 4)
                                 for m in model.modalities if preds[f"present_{m}"].any()}
    return {"report": report, "preds": preds}


def _column(modality: str) -> int:
    return MODALITIES.index(modality)


def subgroup_primary(report: dict) -> dict[str, dict[str, dict]]:
    """family -> group -> {value, ci_low, ci_high, n} of the primary metric (groups measured only): the gate's
    subgroup input; the CI lets the gate tell a real gap from the noise of small groups."""
    primary = report["primary_metric"]
    return {fam: {g: {k: r[primary].get(k) for k in ("value", "ci_low", "ci_high")} | {"n": r.get("n")}
                  for g, r in groups.items() if primary in r and r[primary]["value"] is not None}
            for fam, groups in report["subgroups"].items()}