"""What an MLflow run of a stage shows: its real duration, the stage's parameters, the dataset it read (metadata
only), the model-training view; and an embedded store that moves with its workspace. Real MLflow on SQLite."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import mlflow
import pytest

from tasks import tracking

FACTS = {"dataset_version": "0123456789ab-fedcba987654", "curated_md5": "f" * 32, "contract_versions": {}}


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_run_lasts_from_the_start_of_its_work_not_from_its_logging(tmp_path):
    tracking.configure(tmp_path)
    time.sleep(1.2)  # the stage's work, before anything is logged
    with tracking.start_run(tmp_path, "mmfm", "evaluate", {"mmfm.stage": "evaluate"}) as run:
        mlflow.log_metric("auroc", 0.7)
    first = mlflow.get_run(run.info.run_id).info
    assert first.end_time - first.start_time >= 1200
    time.sleep(0.6)
    with tracking.start_run(tmp_path, "mmfm", "finetune-risk", {}) as second:
        pass
    info = mlflow.get_run(second.info.run_id).info
    assert info.start_time >= first.end_time  # the next run starts where the previous one ended
    assert info.end_time - info.start_time >= 600


def test_a_stage_run_opens_whatever_experiment_the_process_chose(tmp_path, monkeypatch):
    """`mlflow.set_experiment` is process-wide (a notebook, a plugin, an earlier library call): a stage's run still
    opens in the workspace's experiment, and the caller's choice is kept."""
    tracking.configure(tmp_path)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)  # set_experiment exports it; gone again afterwards
    chosen = mlflow.set_experiment("someone-elses")
    from mlflow.tracking import fluent

    try:
        with tracking.start_run(tmp_path, "mmfm-monitoring", "monitor-x", {}) as run:
            mlflow.log_metric("drift", 1.0)
        assert mlflow.get_run(run.info.run_id).info.experiment_id == tracking.experiment_id(tmp_path, "mmfm-monitoring")
        assert fluent._active_experiment_id == chosen.experiment_id
    finally:
        fluent._active_experiment_id = None


def test_experiment_opens_in_the_model_training_view(tmp_path):
    tracking.configure(tmp_path)
    experiment = mlflow.get_experiment(tracking.experiment_id(tmp_path, "mmfm"))
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    mlflow.MlflowClient().delete_experiment_tag(experiment.experiment_id, "mlflow.experimentKind")
    tracking.experiment_id(tmp_path, "mmfm")  # an experiment made before: tagged when next used
    assert mlflow.get_experiment(experiment.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"


def test_describe_run_logs_params_and_the_dataset_once(tmp_path):
    tracking.configure(tmp_path)
    with tracking.start_run(tmp_path, "mmfm", "evaluate", {}) as run:
        mlflow.log_param("lora", '{"r": 8}')
    params = {"n_boot": 200, "baselines": True, "lora": {"r": 8}, "experts": {"prior_steps": 300}}
    for _ in range(2):  # a rerun (a reused run) logs nothing twice and does not fail
        tracking.describe_run(run.info.run_id, params=params, facts=FACTS, context="testing")
    got = mlflow.get_run(run.info.run_id)
    assert got.data.params == {"n_boot": "200", "baselines": "True", "lora": '{"r": 8}',
                               "experts.prior_steps": "300"}
    inputs = got.inputs.dataset_inputs
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    assert (dataset.name, dataset.digest) == (FACTS["dataset_version"], FACTS["curated_md5"])
    assert '"path": "data/curated"' in dataset.source and str(tmp_path) not in dataset.source
    assert [(t.key, t.value) for t in inputs[0].tags] == [("mlflow.data.context", "testing")]


@pytest.mark.parametrize("how", ["copy", "move"])
def test_a_copied_or_moved_store_writes_only_into_its_own_workspace(tmp_path, how):
    original = tmp_path / "original"
    tracking.configure(original)
    with tracking.start_run(original, "mmfm", "evaluate", {}) as run:
        mlflow.log_text("v1", "evaluation/report.md")
    tracking.configure(original)  # MLflow's Default experiment (made under the cwd) moves into the workspace
    before = _files(original)
    other = tmp_path / "elsewhere" / "ws"
    (shutil.copytree if how == "copy" else shutil.move)(original, other)

    tracking.configure(other)
    with tracking.start_run(other, "mmfm", "evaluate", {}) as later:
        mlflow.log_text("v2", "evaluation/report.md")
    for run_id in (run.info.run_id, later.info.run_id):
        uri = mlflow.get_run(run_id).info.artifact_uri
        assert uri.startswith((other / ".mmfm" / "mlartifacts").as_uri())
        assert mlflow.artifacts.load_text(f"{uri}/evaluation/report.md") in {"v1", "v2"}
    stored = sqlite3.connect(other / ".mmfm" / "mlflow.db")
    for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri")):
        assert all(str(other) in v for (v,) in stored.execute(f"SELECT {column} FROM {table}"))  # noqa: S608
    if how == "copy":
        assert _files(original) == before  # the original was neither read for writing nor changed
    else:
        assert not original.exists()


def test_a_run_tagged_with_a_dataset_has_it_as_input(tmp_path):
    tracking.configure(tmp_path)
    run_tags = {"mmfm.stage": "register", "mmfm.dataset_version": FACTS["dataset_version"],
                "mmfm.curated_md5": FACTS["curated_md5"]}
    with tracking.start_run(tmp_path, "mmfm", "register", run_tags) as run:
        pass
    (dataset_input,) = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    assert dataset_input.dataset.digest == FACTS["curated_md5"]
    assert [(t.key, t.value) for t in dataset_input.tags] == [("mlflow.data.context", "training")]
