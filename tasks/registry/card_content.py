"""What a model card says, as display-ready data: built once from the evaluation report when the model is staged.

Why a separate step from rendering: the card's numbers must be the evaluation's, laid out the way a review committee
reads them (Mitchell et al., "Model Cards for Model Reporting": details, intended use, factors, metrics, evaluation
and training data, quantitative analyses, ethical considerations, caveats). Each task gets one table with the fused
model, every baseline and the Bayes/oracle ceiling side by side, each compared with the fused model on the same
patients (paired bootstrap), and a plain verdict. Subgroup and missing-modality results become real tables, rows =
groups, columns = metrics. The content is version-less and deterministic (no clock): it is hashed into the registered
model; the version, approvals and run ids are added when the card is published (tasks/registry/card_publish.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.evaluation.plots import forest_plot, modality_contribution_plot
from tasks.registry.model_card import NOT_JUDGED

TASK_TITLES = {"diagnosis": "Diagnosis (none / pneumonia / heart failure / pulmonary embolism)",
               "risk": "One-year mortality risk", "survival": "Survival ranking"}
SAME_INPUTS_LABEL = {"logistic_regression": "Logistic regression, same inputs + demographics",
                     "cox": "Ridge Cox model, same inputs + demographics"}
CEILINGS = {"bayes": "Bayes posterior of the generator (ceiling)",
            "oracle": "Oracle hazard of the generator (ceiling)"}
INTENDED_USE = ("Research decision support for adults presenting with chest symptoms: differential diagnosis "
                "(none / pneumonia / heart failure / pulmonary embolism), one-year mortality risk and survival "
                "ranking from whatever of CT, radiograph, labs, notes and omics a patient has.")
OUT_OF_SCOPE = ("Autonomous diagnosis; patients under 18; sites, scanners or populations unlike the training data "
                "without monitoring (mmfm monitor).")
FACTORS = ("Results are broken down by site, sex and age band (the relevant groups available in the de-identified "
           "extracts) and by the modality a patient lacks; groups smaller than the evaluation's minimum are listed "
           "as not measured rather than dropped.")
ETHICS = ["Trained on de-identified extracts; no patient identifier, raw value or file name appears in this card.",
          "Performance differs between subgroups (see the subgroup tables); a gap with an interval excluding zero "
          "must be reviewed before clinical use.",
          "Predictions support, not replace, a clinician; the model never sees information outside its inputs."]
CAVEATS = ["Trained and evaluated on the dataset version above only; subgroup estimates on small groups have wide "
           "intervals.",
           "Attention shares describe what the fusion read, not causal importance.",
           "Synthetic cohorts (mmfm synth) carry no clinical validity; the Bayes/oracle ceilings exist only for them."]


def fmt(v: Any) -> str:
    return "not reported" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def with_ci(entry: dict | None) -> str:
    """{value, ci_low, ci_high} -> "0.884 [0.844, 0.919]"; unmeasured -> why."""
    entry = entry or {}
    if entry.get("value") is None:
        return f"not measured ({entry['unmeasured']})" if entry.get("unmeasured") else "not measured"
    if entry.get("ci_low") is None:
        return fmt(float(entry["value"]))
    return f"{entry['value']:.3f} [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"


def difference(d: dict | None, ceiling: bool) -> tuple[str, str, str]:
    """(fused vs baseline on the same patients, fused − baseline [CI], verdict) of one paired comparison."""
    d = d or {}
    if d.get("value") is None or d.get("ci_low") is None:
        return "", "", f"not measured: {d.get('skipped', 'no paired comparison')}"
    same = f"{d['a']:.3f} vs {d['b']:.3f} (n={d.get('n')})"
    diff = f"{d['value']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"
    if ceiling:
        verdict = "below the ceiling" if d["ci_high"] < 0 else "not distinguishable from the ceiling"
    else:
        verdict = ("fused better" if d["ci_low"] > 0 else "fused worse" if d["ci_high"] < 0
                   else "no difference shown (CI spans 0)")
    return same, diff, verdict


def _reference_models(task: str, evaluation: dict) -> list[tuple[str, str, str, dict | None, Any]]:
    """(comparison name, label, role, metrics, patients) of every baseline and ceiling of `task`."""
    base, n = evaluation.get("baselines") or {}, evaluation.get("test_patients")
    found = ((base.get("comparisons") or {}).get(task)) or {}
    out = []
    for name in found:
        if name == "best_single":
            continue
        if name.startswith("single_modality."):
            m = name.split(".", 1)[1]
            entry = (base.get("single_modality") or {}).get(m) or {}
            out.append((name, f"Single modality: {m} only", "baseline", entry.get("single"), entry.get("patients")))
        elif name == "late_fusion":
            out.append((name, "Late fusion (per-modality embeddings, logistic regression)", "baseline",
                        (base.get("late_fusion") or {}).get("metrics"), n))
        elif name in SAME_INPUTS_LABEL:
            out.append((name, SAME_INPUTS_LABEL[name], "baseline",
                        (base.get(f"{task}_same_inputs") or {}).get("metrics"), n))
        elif name == "bayes":
            out.append((name, CEILINGS["bayes"], "ceiling", (base.get("bayes") or {}).get("metrics"),
                        (base.get("bayes") or {}).get("patients")))
        elif name == "oracle":
            oracle = base.get("oracle") or {}
            out.append((name, CEILINGS["oracle"], "ceiling", (oracle.get(task) or {}).get("metrics"),
                        oracle.get("patients")))
        else:
            out.append((name, name, "baseline", None, None))
    return out


def task_table(task: str, report: dict, evaluation: dict) -> dict:
    """One task: the fused model, its baselines and ceiling side by side, each with its paired comparison."""
    metrics = list((report.get("metrics") or {}).keys())
    rows = [{"model": "This model (fused)", "role": "model", "patients": report.get("patients"),
             "cells": [with_ci(report["metrics"].get(m)) for m in metrics], "same_patients": "", "difference": "",
             "verdict": ""}]
    comparisons = (((evaluation.get("baselines") or {}).get("comparisons")) or {}).get(task) or {}
    better, total, ceiling_line = 0, 0, None
    for name, label, role, found, patients in _reference_models(task, evaluation):
        same, diff, verdict = difference(comparisons.get(name), role == "ceiling")
        rows.append({"model": label, "role": role, "patients": patients,
                     "cells": [with_ci((found or {}).get(m)) for m in metrics], "same_patients": same,
                     "difference": diff, "verdict": verdict})
        if role == "baseline":
            total += 1
            better += verdict == "fused better"
        elif diff:
            ceiling_line = f"{diff} from the ceiling ({verdict})"
    best = comparisons.get("best_single") or {}
    summary = f"better than {better} of {total} baselines (paired 95% CI above 0)" if total else \
        "no baseline was compared"
    if best.get("baseline") and best.get("value") is not None:
        summary += f"; against the best single modality ({best['baseline']}): {difference(best, False)[2]}"
    summary += f"; {ceiling_line}" if ceiling_line else "; no ceiling (not a synthetic cohort)"
    return {"task": task, "title": TASK_TITLES.get(task, task), "primary_metric": report.get("primary_metric"),
            "patients": report.get("patients"), "metrics": metrics, "rows": rows, "verdict": summary}


def subgroup_tables(task: str, report: dict) -> list[dict]:
    metrics = list((report.get("metrics") or {}).keys())
    out = []
    for family, groups in (report.get("subgroups") or {}).items():
        rows = [{"group": g, "n": r.get("n"),
                 "cells": ([f"not measured ({r['skipped']})"] + [""] * (len(metrics) - 1)) if "skipped" in r
                 else [with_ci(r.get(m)) for m in metrics]} for g, r in sorted(groups.items())]
        out.append({"task": task, "family": family, "metrics": metrics, "rows": rows,
                    "gap": (report.get("subgroup_gaps") or {}).get(family)})
    return out


def missing_modality_table(task: str, report: dict) -> dict:
    metrics, primary = list((report.get("metrics") or {}).keys()), report.get("primary_metric")
    full = ((report.get("metrics") or {}).get(primary) or {}).get("value")
    rows = []
    for m, res in (report.get("without_modality") or {}).items():
        if "skipped" in res:
            rows.append({"modality": m, "cells": [f"not measured ({res['skipped']})"] + [""] * (len(metrics) - 1),
                         "drop": "", "attention": fmt((report.get("attention_share") or {}).get(m))})
            continue
        value = (res.get(primary) or {}).get("value")
        rows.append({"modality": m, "cells": [with_ci(res.get(k)) for k in metrics],
                     "drop": "" if None in (full, value) else f"{full - value:+.3f}",
                     "attention": fmt((report.get("attention_share") or {}).get(m))})
    return {"task": task, "metrics": metrics, "primary_metric": primary, "rows": rows}


def card_plots(evaluation: dict, root: Path, out: str = "card/plots") -> list[dict]:
    """Every plot the card shows, as {title, path relative to `root`}: the evaluation's own (ROC, calibration,
    survival curves, Grad-CAM) and, drawn here from the report, a subgroup forest plot and the per-modality
    contribution of each task."""
    plots = []
    for task, report in (evaluation.get("tasks") or {}).items():
        cams = 0
        for f in report.get("files") or []:
            if not f.endswith(".png"):
                continue
            title = Path(f).stem.replace("_", " ")
            if f.startswith("gradcam/"):  # the file name carries a pseudonym: the card names no patient
                cams += 1
                title = f"Grad-CAM {Path(f).stem.split('_')[1]} {Path(f).stem.split('_')[2]}, test patient #{cams}"
            plots.append({"title": f"{task}: {title}", "path": f"evaluation/{f}"})
        primary = report.get("primary_metric")
        rows = [(f"{family}: {g} (n={r.get('n')})", None if "skipped" in r else r.get(primary))
                for family, groups in (report.get("subgroups") or {}).items() for g, r in sorted(groups.items())]
        full = ((report.get("metrics") or {}).get(primary) or {}).get("value")
        if rows:
            forest_plot(rows, primary, root / out / f"forest_{task}.png", reference=full)
            plots.append({"title": f"{task}: subgroup forest plot ({primary})", "path": f"{out}/forest_{task}.png"})
        without = {m: (r.get(primary) or {}).get("value") for m, r in (report.get("without_modality") or {}).items()}
        if without or report.get("attention_share"):
            modality_contribution_plot(full, without, report.get("attention_share") or {}, primary,
                                       root / out / f"modalities_{task}.png")
            plots.append({"title": f"{task}: per-modality contribution", "path": f"{out}/modalities_{task}.png"})
    if not any("survival" in p["path"] for p in plots if p["path"].startswith("evaluation/")):
        plots.append({"title": "survival: curves by predicted risk group", "path": None,
                      "missing": "not produced by this evaluation (no survival-curve plot in its files)"})
    return plots


def card_content(evaluation: dict, meta: dict, name: str, gate: dict, root: Path) -> dict:
    """The version-less card of a staged model (plots drawn under `root`/card/plots)."""
    tasks = evaluation.get("tasks") or {}
    return {
        "name": name, "version": None, "verdict": NOT_JUDGED,  # the decision comes at promotion (card_publish)
        "model_details": {"architecture": meta.get("model"), "tasks": ", ".join(tasks) or None,
                          "code_version": meta.get("code_version")},
        "intended_use": INTENDED_USE, "out_of_scope": OUT_OF_SCOPE, "factors": FACTORS,
        "dataset_version": evaluation.get("dataset_version"), "contract_versions": evaluation.get("contract_versions"),
        "code_version": meta.get("code_version"),
        "evaluation_data": {"split": evaluation.get("split"), "patients": evaluation.get("test_patients"),
                            "counts": {k: v for k, v in (evaluation.get("test_counts") or {}).items()
                                       if isinstance(v, dict)}},
        "training_data": {k: v for k, v in (meta.get("training_data") or {}).items() if isinstance(v, dict)},
        "tasks": [task_table(t, r, evaluation) for t, r in tasks.items()],
        "subgroups": [s for t, r in tasks.items() for s in subgroup_tables(t, r)],
        "missing_modality": [missing_modality_table(t, r) for t, r in tasks.items()],
        "gate": gate, "ethical_considerations": ETHICS, "caveats": CAVEATS,
        "lineage": {"dataset_version": evaluation.get("dataset_version"),
                    "evaluate_run_id": evaluation.get("mlflow_run_id"), "pretrain_run_id": meta.get("mlflow_run_id"),
                    "finetune_run_ids": {t: r.get("finetune_run_id") for t, r in tasks.items()}},
        "plots": card_plots(evaluation, root),
    }
