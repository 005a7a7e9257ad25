"""The evaluation as the audit shows it: primary metrics, every baseline (single-modality, late fusion, Bayes,
oracle, same-input classical models) and the paired comparisons of the fused model with them, aggregates only.

Why apart from gathering: the evaluation's JSON layout is the evaluate stage's, and it evolves; one function maps it
to the plain rows the report prints, so a changed layout breaks here and in its test, not in the renderer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def evaluation_summary(raw: dict) -> dict:
    tasks = {}
    for name, t in sorted((raw.get("tasks") or {}).items()):
        primary = t.get("primary_metric")
        tasks[name] = {"primary_metric": primary, "patients": t.get("patients"),
                       "primary": (t.get("metrics") or {}).get(primary) or {},
                       "metrics": t.get("metrics") or {}, "subgroup_gaps": t.get("subgroup_gaps") or {}}
    base = raw.get("baselines") or {}
    oracle = base.get("oracle") if isinstance(base.get("oracle"), dict) else {}
    baselines = {"late_fusion": (base.get("late_fusion") or {}).get("metrics") or {},
                 "bayes": (base.get("bayes") or {}).get("metrics") or {},
                 **{f"single_modality.{m}": (r.get("single") or r.get("metrics") or {"skipped": r.get("skipped")})
                    for m, r in sorted((base.get("single_modality") or {}).items())},
                 **{f"{k.removesuffix('_same_inputs')}.{(v or {}).get('model', 'same inputs')}": _metrics_or_skip(v)
                    for k, v in sorted(base.items()) if k.endswith("_same_inputs")},  # risk, survival
                 **{f"{t}.oracle": _metrics_or_skip(v) for t, v in sorted(oracle.items()) if isinstance(v, Mapping)}}
    comparisons = [{"task": t, "name": name, **{k: d.get(k) for k in COMPARISON_FIELDS}}
                   for t, found in sorted((base.get("comparisons") or {}).items()) for name, d in found.items()]
    return {"split": raw.get("split"), "dataset_version": raw.get("dataset_version"),
            "test_patients": raw.get("test_patients"), "mlflow_run_id": raw.get("mlflow_run_id"), "tasks": tasks,
            "baselines": baselines, "comparisons": comparisons}


COMPARISON_FIELDS = ("metric", "baseline", "a", "b", "value", "ci_low", "ci_high", "n", "skipped")


def _metrics_or_skip(entry: Any) -> dict:
    entry = entry if isinstance(entry, Mapping) else {}
    return entry.get("metrics") or {"skipped": entry.get("skipped") or "not measured"}
