"""The demo's own bookkeeping: its cohort's configuration, whether a generated cohort can be reused, and the
headline numbers it prints from the evaluation report."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from tasks.synth.generate import SynthConfig


def synth_config(params: dict, patients: int) -> SynthConfig:
    """The demo cohort's SynthConfig: params.yaml `synth`, `patients` from the command line."""
    p = params.get("synth", {})
    return SynthConfig(patients=patients, sites=p.get("sites", 3), seed=p.get("seed", 7),
                       missing_rate=p.get("missing_rate", 0.2), corrupt_rate=p.get("corrupt_rate", 0.02))


def cohort_is_current(cohort: Path, cfg: SynthConfig) -> bool:
    """Was `cohort` generated with exactly `cfg`? (then the demo reuses it)"""
    saved = cohort / "truth" / "synth.json"
    return saved.exists() and json.loads(saved.read_text()).get("config") == json.loads(json.dumps(asdict(cfg)))


def evaluation_headline(path: Path) -> dict | None:
    """Headline numbers of the evaluation report: per task the primary metric with its CI, and the baselines."""
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    out = {"dataset_version": report.get("dataset_version"), "test_patients": report.get("test_patients"),
           "tasks": {t: {"metric": r["primary_metric"], **r["metrics"][r["primary_metric"]]}
                     for t, r in report.get("tasks", {}).items()}}
    base = report.get("baselines") or {}
    if "metrics" in (base.get("late_fusion") or {}):
        out["late_fusion_auroc"] = base["late_fusion"]["metrics"]["auroc_macro"]["value"]
    if isinstance(base.get("bayes"), dict) and "metrics" in base["bayes"]:
        out["bayes_auroc_same_patients"] = base["bayes"]["metrics"]["auroc_macro"]["value"]
    single = {m: r["single"]["auroc_macro"]["value"] for m, r in base.get("single_modality", {}).items()
              if "single" in r}
    if single:
        out["single_modality_auroc"] = single
    return out
