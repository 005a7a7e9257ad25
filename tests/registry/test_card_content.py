"""The staged model card from an evaluation report: one table per task with baselines and ceiling side by side,
subgroup and missing-modality results as real tables, every plot embedded, deterministic (hashed with the model)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from tasks.evaluation.plots import roc_plot
from tasks.registry.card_content import card_content, difference
from tasks.registry.model_card import render_model_card


def _m(value, low, high):
    return {"value": value, "ci_low": low, "ci_high": high}


def _cmp(metric, value, low, high, a, b, n, baseline):
    return {"metric": metric, "baseline": baseline, "value": value, "ci_low": low, "ci_high": high, "a": a, "b": b,
            "n": n, "n_boot_used": 50}


def synthetic_evaluation(root: Path) -> dict:
    """An evaluation report in evaluate's shape (three tasks, baselines, Bayes/oracle) with a real ROC plot under
    `root`/evaluation/plots."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    roc_plot(y, np.clip(y * 0.4 + rng.random(60) * 0.6, 0, 1), ["alive", "dead"],
             root / "evaluation" / "plots" / "roc_diagnosis.png")
    sub = {"site": {"site-a": {"n": 30, "auroc_macro": _m(0.81, 0.7, 0.9)}, "site-b": {"n": 5, "skipped": "n=5 < 20"}}}
    diag = {"task": "diagnosis", "kind": "multiclass", "primary_metric": "auroc_macro", "patients": 35,
            "metrics": {"auroc_macro": _m(0.8123, 0.75, 0.87), "brier": _m(0.41, 0.35, 0.47)}, "subgroups": sub,
            "subgroup_gaps": {"site": None},
            "without_modality": {"labs": {"auroc_macro": _m(0.70, 0.6, 0.8), "brier": _m(0.5, 0.4, 0.6)},
                                 "omics": {"skipped": "no test patient has it"}},
            "attention_share": {"labs": 0.6, "image_2d": 0.4}, "finetune_run_id": "ft-diag",
            "files": ["plots/roc_diagnosis.png", "attention.parquet"]}
    risk = {"task": "risk", "kind": "binary", "primary_metric": "auroc", "patients": 35,
            "metrics": {"auroc": _m(0.6641, 0.55, 0.77)}, "subgroups": {}, "without_modality": {},
            "attention_share": {}, "finetune_run_id": "ft-risk", "files": []}
    surv = {"task": "survival", "kind": "survival", "primary_metric": "c_index", "patients": 35,
            "metrics": {"c_index": _m(0.6321, 0.56, 0.7)}, "subgroups": {}, "without_modality": {},
            "attention_share": {}, "finetune_run_id": "ft-surv", "files": []}
    comparisons = {
        "diagnosis": {"single_modality.labs": _cmp("auroc_macro", 0.05, 0.01, 0.09, 0.82, 0.77, 30,
                                                   "single_modality.labs"),
                      "best_single": _cmp("auroc_macro", 0.05, 0.01, 0.09, 0.82, 0.77, 30, "single_modality.labs"),
                      "late_fusion": _cmp("auroc_macro", 0.02, -0.01, 0.05, 0.81, 0.79, 35, "late_fusion"),
                      "bayes": _cmp("auroc_macro", -0.0604, -0.0878, -0.0348, 0.81, 0.87, 35, "bayes")},
        "risk": {"logistic_regression": _cmp("auroc", 0.0145, -0.03, 0.05, 0.66, 0.65, 30, "logistic_regression"),
                 "oracle": _cmp("auroc", -0.05, -0.11, 0.01, 0.66, 0.71, 30, "oracle")},
        "survival": {"cox": {"skipped": "the train split has no event: a Cox model needs one"},
                     "oracle": _cmp("c_index", -0.0766, -0.127, -0.026, 0.63, 0.71, 35, "oracle")}}
    baselines = {"single_modality": {"labs": {"patients": 30, "single": {"auroc_macro": _m(0.7712, 0.7, 0.84)}}},
                 "late_fusion": {"metrics": {"auroc_macro": _m(0.7901, 0.72, 0.86)}},
                 "risk_same_inputs": {"metrics": {"auroc": _m(0.6512, 0.52, 0.74)}},
                 "survival_same_inputs": {"skipped": "the train split has no event: a Cox model needs one"},
                 "bayes": {"patients": 35, "metrics": {"auroc_macro": _m(0.8702, 0.82, 0.91)}},
                 "oracle": {"patients": 35, "risk": {"metrics": {"auroc": _m(0.7133, 0.6, 0.8)}},
                            "survival": {"metrics": {"c_index": _m(0.7081, 0.64, 0.78)}}},
                 "comparisons": comparisons}
    return {"split": "test", "dataset_version": "ds-1", "contract_versions": {"labs": "2.0.0"}, "test_patients": 35,
            "test_counts": {"patients": 35, "site": {"site-a": 30, "site-b": 5}}, "mlflow_run_id": "eval-run",
            "tasks": {"diagnosis": diag, "risk": risk, "survival": surv}, "baselines": baselines}


def staged_card(root: Path) -> dict:
    gate = {"note": "judged at registration", "checks": [{"rule": "beats_baselines", "passed": False,
                                                          "value": {"late_fusion": {"value": 0.02}},
                                                          "detail": "not better than late_fusion"}]}
    return card_content(synthetic_evaluation(root), {"model": "tiny", "code_version": "abc123",
                                                     "mlflow_run_id": "pre-run",
                                                     "training_data": {"site": {"site-a": 90}}},
                        "mmfm-test", gate, root)


def test_each_task_has_one_table_with_baselines_and_ceiling_on_the_same_patients(tmp_path):
    card = staged_card(tmp_path)
    tables = {t["task"]: t for t in card["tasks"]}
    assert list(tables) == ["diagnosis", "risk", "survival"]
    diag = {r["model"]: r for r in tables["diagnosis"]["rows"]}
    assert diag["This model (fused)"]["cells"][0] == "0.812 [0.750, 0.870]"
    assert diag["Single modality: labs only"]["verdict"] == "fused better"
    assert diag["Single modality: labs only"]["same_patients"] == "0.820 vs 0.770 (n=30)"
    late = next(r for m, r in diag.items() if m.startswith("Late fusion"))
    assert late["verdict"] == "no difference shown (CI spans 0)" and late["cells"][0] == "0.790 [0.720, 0.860]"
    bayes = next(r for m, r in diag.items() if m.startswith("Bayes"))
    assert bayes["difference"] == "-0.060 [-0.088, -0.035]" and bayes["verdict"] == "below the ceiling"
    assert "better than 1 of 2 baselines" in tables["diagnosis"]["verdict"]
    assert "-0.060 [-0.088, -0.035] from the ceiling" in tables["diagnosis"]["verdict"]
    cox = next(r for r in tables["survival"]["rows"] if r["model"].startswith("Ridge Cox"))
    assert cox["verdict"].startswith("not measured: the train split has no event")
    oracle = next(r for r in tables["risk"]["rows"] if r["model"].startswith("Oracle"))
    assert oracle["verdict"] == "not distinguishable from the ceiling"


def test_rendered_card_has_real_tables_embedded_images_and_no_reprs(tmp_path):
    card = staged_card(tmp_path)
    markdown, page = render_model_card({**card, "version": "7"}, image_root=tmp_path)
    assert "{'" not in page and "{'" not in markdown and "[{" not in page
    assert "Model card: mmfm-test version 7" in page
    assert re.search(r'id="mmfm-verdict" data-verdict="not judged"', page)
    assert page.count("<table>") >= 3 + 1 + 2  # tasks, subgroups, missing modality (+ gate, lineage, data)
    assert "<td>site-b</td><td>5</td><td>not measured (n=5 &lt; 20)</td>" in page
    assert "<td>labs</td><td>0.700 [0.600, 0.800]</td><td>0.500 [0.400, 0.600]</td><td>+0.112</td>" in page
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == 3  # roc, forest, modalities
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert "http://" not in page and "https://" not in page
    assert "survival: curves by predicted risk group: not produced by this evaluation" in page
    assert "| This model (fused) | 35 | 0.812 [0.750, 0.870] |" in markdown
    assert "![diagnosis: roc diagnosis](evaluation/plots/roc_diagnosis.png)" in markdown


def test_staged_card_is_deterministic_and_json_serialisable(tmp_path):
    first, second = staged_card(tmp_path / "a"), staged_card(tmp_path / "b")
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert first["verdict"] == "not judged"  # the JSON beside the staged page carries the page's verdict word
    for plot in (p for p in first["plots"] if p.get("path")):
        assert (tmp_path / "a" / plot["path"]).read_bytes() == (tmp_path / "b" / plot["path"]).read_bytes()


def test_difference_reads_the_paired_interval():
    assert difference({"value": 0.1, "ci_low": 0.02, "ci_high": 0.2, "a": 0.9, "b": 0.8, "n": 9}, False)[2] == \
        "fused better"
    assert difference({"value": -0.1, "ci_low": -0.2, "ci_high": -0.01, "a": 0.8, "b": 0.9, "n": 9}, False)[2] == \
        "fused worse"
    assert difference({"skipped": "too few"}, True) == ("", "", "not measured: too few")
