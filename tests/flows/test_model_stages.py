"""The model stages as the pipeline runs them: pretrain -> finetune -> evaluate on a versioned dataset, with MLflow
runs that name their data and code, ledger events that chain back to the curated data, and a rerun that skips."""

from __future__ import annotations

import json
import shutil

import pytest

from flows.pipeline import MODEL_STAGES, pipeline
from tasks.lineage import Ledger, lineage

pytestmark = pytest.mark.slow  # every test reads the session's trained workspace (tests/conftest.py)


@pytest.fixture(scope="module")
def trained(trained_workspace):
    return trained_workspace


def test_stages_run_in_order_and_a_rerun_skips_them(trained):
    ws, _, ran = trained
    assert ran["ran"] == ["pretrain", "finetune", "evaluate"]
    again = pipeline(workspace=ws.root, stages=list(MODEL_STAGES))
    assert again["ran"] == [] and again["skipped"] == ["pretrain", "finetune", "evaluate"]


def test_evaluation_report_measures_what_the_gate_and_the_card_need(trained):
    ws, published, _ = trained
    report = json.loads((ws.models / "evaluation" / "evaluation.json").read_text())
    assert report["split"] == "test" and report["dataset_version"] == published["dataset_version"]
    diag = report["tasks"]["diagnosis"]
    assert set(diag["metrics"]) == {"auroc_macro", "auprc_macro", "ece", "brier"}
    assert set(diag["subgroups"]) == {"site", "sex", "age_band"}
    assert set(diag["without_modality"]) == {"image_3d", "image_2d", "labs", "notes", "omics"}
    assert report["tasks"]["survival"]["primary_metric"] == "c_index"
    assert set(report["baselines"]) >= {"single_modality", "late_fusion", "bayes"}
    assert report["baselines"]["bayes"]["patients"] == report["test_patients"]
    assert 0.0 <= sum(diag["attention_share"].values()) <= len(diag["attention_share"])
    for name in diag["files"]:
        assert (ws.models / "evaluation" / name).stat().st_size > 0


def test_mlflow_runs_carry_dataset_and_code_versions(trained):
    import mlflow

    from tasks import tracking

    ws, published, _ = trained
    tracking.configure(ws.root)
    runs = mlflow.search_runs(experiment_names=["mmfm"], output_format="list")
    stages = sorted(r.data.tags["mmfm.stage"] for r in runs)
    assert stages == ["evaluate", "finetune", "finetune", "finetune", "pretrain"]
    for run in runs:
        assert run.data.tags["mmfm.dataset_version"] == published["dataset_version"]
        assert run.data.tags["mmfm.code_version"]
    finetunes = [r for r in runs if r.data.tags["mmfm.stage"] == "finetune"]
    pretrain_run = next(r for r in runs if r.data.tags["mmfm.stage"] == "pretrain")
    assert {r.data.tags["mmfm.backbone_run_id"] for r in finetunes} == {pretrain_run.info.run_id}
    history = mlflow.MlflowClient().get_metric_history(pretrain_run.info.run_id, "train_loss")
    assert [m.step for m in history] == list(range(1, 7))


def test_ledger_traces_the_evaluation_back_to_the_dataset_version(trained):
    ws, published, _ = trained
    graph = lineage(Ledger.of_workspace(ws.root), "models/evaluation", ws.root)
    stages = {n.get("stage") for n in graph["nodes"] if n.get("stage")}
    assert {"ingest", "validate", "pretrain", "finetune", "evaluate"} <= stages


@pytest.mark.slow
def test_pretraining_under_torchrun_with_two_gloo_ranks(trained, tmp_path):
    from flows.pretrain import pretrain_flow

    ws, _, _ = trained
    copy = tmp_path / "ws"  # a copy: the shared workspace's backbone stays the one its adapters were made for
    shutil.copytree(ws.root, copy, symlinks=True)
    out = pretrain_flow(workspace=copy, steps=2, nproc=2, resume=False)
    meta = json.loads((copy / "models" / "backbone" / "meta.json").read_text())
    assert meta["world_size"] == 2 and out["steps"] == 2
