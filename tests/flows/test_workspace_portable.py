"""A workspace moved or copied elsewhere keeps working and writes only into itself; its flow runs are named and
tagged for an operator; its MLflow runs carry parameters and the dataset they read. On the shared 40-patient
workspace (tests/conftest.py `trained_workspace`), copied first: the shared one is never changed."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import mlflow
import pytest

from flows.evaluate import evaluate_flow
from flows.register import register_flow
from tasks import tracking
from tasks.registry.staging import load_verified
from tasks.versioning.dataset import current

pytestmark = pytest.mark.slow


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root` with its size and modification time: what a write anywhere would change."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and ".git" not in p.parts}


def test_a_moved_copy_writes_only_into_itself_and_loads_its_own_model(trained_workspace, tmp_path):
    shared = trained_workspace[0].root
    shared_before = _files(shared)
    original = tmp_path / "original"
    shutil.copytree(shared, original, symlinks=True)
    registered = register_flow(workspace=original)  # a workspace through register
    original_before = _files(original)

    copied = tmp_path / "copy"
    shutil.copytree(original, copied, symlinks=True)
    moved = tmp_path / "site" / "moved"
    moved.parent.mkdir()
    shutil.move(copied, moved)  # copy, then move the copy
    summary = evaluate_flow(workspace=moved)  # a stage that logs a run with artifacts

    assert _files(original) == original_before  # nothing written under the original
    assert _files(shared) == shared_before
    run = mlflow.get_run(summary["mlflow_run_id"])
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(moved) and (artifacts / "evaluation" / "evaluation.json").is_file()

    validation = (moved / "data" / "reports" / "validation.json").read_text()
    assert str(shared) not in validation and not any(Path(v).is_absolute()
                                                     for v in json.loads(validation)["artifacts"].values())

    original.rename(tmp_path / "gone")  # the model must come from the moved copy, not from where it was made
    tracking.configure(moved)
    model = load_verified(f"models:/{registered['name']}/{registered['version']}", tmp_path / "scratch")
    assert model.metadata.run_id
    version = mlflow.MlflowClient().get_model_version(registered["name"], registered["version"])
    assert str(moved) in version.source or version.source.startswith("models:/")


def test_evaluate_run_carries_params_dataset_and_tags(trained_workspace):
    ws = trained_workspace[0]
    tracking.configure(ws.root)
    data = current(ws.root)
    evaluation = json.loads((ws.models / "evaluation" / "evaluation.json").read_text())
    run = mlflow.get_run(evaluation["mlflow_run_id"])
    assert run.data.params["n_boot"] == "20" and "min_group" in run.data.params
    (dataset_input,) = run.inputs.dataset_inputs
    assert (dataset_input.dataset.name, dataset_input.dataset.digest) == (data.name, data.curated_md5)
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "testing"
    for key in ("mmfm.stage", "mmfm.dataset_version", "mmfm.curated_md5", "mmfm.contract_versions",
                "mmfm.code_version"):
        assert run.data.tags[key]
    experiment = mlflow.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_flow_runs_are_named_and_tagged_by_stage_and_subject(trained_workspace):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    ws = trained_workspace[0]
    version = current(ws.root).name
    stamp = r"\d{8}T\d{6}Z"
    with get_client(sync_client=True) as client:
        def runs(flow: str):
            return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])))

        evaluated = [r for r in runs("evaluate") if f"dataset:{version}" in r.tags]
        assert evaluated, "no evaluate run tagged with the workspace's dataset version"
        for run in evaluated:
            assert re.fullmatch(rf"evaluate-{re.escape(version)}-{stamp}", run.name)
            assert {"mmfm", "stage:evaluate"} <= set(run.tags)
        ingested = runs("ingest-fhir")
        assert ingested
        for run in ingested:
            site = next(t.removeprefix("site:") for t in run.tags if t.startswith("site:"))
            assert re.fullmatch(rf"ingest-fhir-{re.escape(site)}-{stamp}", run.name)
            assert "stage:ingest-fhir" in run.tags
