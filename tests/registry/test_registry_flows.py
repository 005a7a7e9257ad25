"""Register -> promote through the gate -> refuse -> roll back -> tamper -> predict, on a real trained workspace
(a copy of the session's trained workspace, with its own MLflow store) through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tasks.lineage import Ledger

runner = CliRunner()
NAME = "mmfm-multimodal"
pytestmark = pytest.mark.slow  # on a copy of the session's trained workspace (tests/conftest.py)


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def _cli(ws: Path, *args: str):
    return runner.invoke(app, [*args, "-w", str(ws), "--json"])


@pytest.fixture(scope="module")
def ws(trained_workspace, tmp_path_factory) -> Path:
    from tasks import tracking

    root = tmp_path_factory.mktemp("registry") / "ws"
    shutil.copytree(trained_workspace[0].root, root, symlinks=True)
    (root / ".mmfm" / "mlflow.db").unlink()  # a registry of its own
    tracking.configure(root)
    return root


@pytest.fixture(scope="module")
def first(ws) -> dict:
    return _json(_cli(ws, "register"))


def test_register_is_a_challenger_with_lineage_and_hashes_and_reruns_register_nothing(ws, first):
    import mlflow

    assert first["version"] == "1" and first["alias"] == "challenger" and first["phi_findings"] == 0
    tags = mlflow.MlflowClient().get_model_version(NAME, "1").tags
    assert tags["mmfm.dataset_version"] == first["dataset_version"] and tags["mmfm.code_version"]
    assert tags["mmfm.lineage_event"] == first["lineage_event"]
    assert int(tags["mmfm.sha256.chunks"]) >= 1 and tags["mmfm.evaluated_split"] == "test"
    again = _json(_cli(ws, "register"))
    assert again["version"] == "1" and again["already_registered"] is True


def test_promotion_approved_recorded_refused_with_reasons_and_rolled_back(ws, first):
    import mlflow

    client = mlflow.MlflowClient()
    ok = _json(_cli(ws, "promote", f"{NAME}/1", "--approver", "dr-ada", "--reason", "first model"))
    assert ok["decision"] == "approved" and str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    assert any(k.startswith("mmfm.approved.champion.") for k in client.get_model_version(NAME, "1").tags)

    # a second candidate evaluated worse and only on the validation split: the gate lists both reasons
    report = ws / "models" / "evaluation" / "evaluation.json"
    original = report.read_text()
    worse = json.loads(original)
    worse["split"] = "val"
    worse["tasks"]["diagnosis"]["metrics"]["auroc_macro"]["value"] = -1.0
    report.write_text(json.dumps(worse))
    try:
        second = _json(_cli(ws, "register"))
    finally:
        report.write_text(original)
    assert second["version"] == "2"
    refused = _cli(ws, "promote", f"{NAME}/2", "--approver", "dr-ada", "--reason", "try")
    assert refused.exit_code == 1
    assert "below the champion" in refused.output and "split" in refused.output
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    events = [e for e in Ledger.of_workspace(ws).events() if e.stage == "promote"]
    assert [e.facts["decision"] for e in events] == ["approved", "refused"]

    # an administrator may override nothing: tags cannot make v2 pass (the gate reads hashed artifacts)
    client.set_model_version_tag(NAME, "2", "mmfm.evaluated_split", "test")
    assert _cli(ws, "promote", f"{NAME}/2", "--approver", "dr-ada", "--reason", "retry").exit_code == 1

    # rollback: v1 champion -> v3 (same evaluation as v1 via a new card) -> back to v1
    client.set_registered_model_tag(NAME, "mmfm.alias_history.champion", json.dumps(["1", "2"]))
    client.set_registered_model_alias(NAME, "champion", "2")
    back = _json(_cli(ws, "rollback", "--approver", "dr-ada", "--reason", "v2 misbehaves"))
    assert back["from_version"] == "2" and back["to_version"] == "1"
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"


def test_a_tampered_artifact_refuses_to_load(ws, first, tmp_path):
    import mlflow

    from tasks.registry.integrity import IntegrityError
    from tasks.registry.staging import load_verified

    client = mlflow.MlflowClient()
    model_id = client.get_model_version(NAME, "1").source.removeprefix("models:/")  # the logged model behind v1
    store = Path(client.get_logged_model(model_id).artifact_location.removeprefix("file://"))
    card = next(store.rglob("model_card.md"))
    original = card.read_bytes()
    card.write_bytes(original.replace(b"Intended use", b"Intended  use", 1))
    try:
        with pytest.raises(IntegrityError, match="model_card.md"):
            load_verified(f"{NAME}/1", tmp_path / "a")
    finally:
        card.write_bytes(original)
    assert load_verified(f"{NAME}/1", tmp_path / "b") is not None


def test_predict_scores_the_test_split_and_a_new_extract(ws, first, tmp_path):
    import pandas as pd

    from tasks.synth.generate import SynthConfig, generate

    curated = _json(_cli(ws, "predict", "--model", f"{NAME}/1"))
    frame = pd.read_parquet(curated["output"])
    assert len(frame) == curated["patients"] > 0 and set(frame["model_version"]) == {f"{NAME}/1"}
    probs = frame[[c for c in frame.columns if c.startswith("p_")]].sum(axis=1)
    assert ((probs - 1).abs() < 1e-4).all() and frame["patient_id"].str.startswith("P").all()

    generate(tmp_path / "new", SynthConfig(patients=6, sites=1, seed=77, cxr_size=32, ct_shape=(2, 16, 16)))
    cohort_before = (ws / "data" / "curated" / "cohort.parquet").read_bytes()
    scored = _json(_cli(ws, "predict", "--model", f"{NAME}/1", str(tmp_path / "new")))
    new = pd.read_parquet(scored["output"])
    assert 0 < len(new) <= 6 and new["p_none"].notna().all()
    assert (ws / "data" / "curated" / "cohort.parquet").read_bytes() == cohort_before  # never training data
    assert any(e.stage == "predict" for e in Ledger.of_workspace(ws).events())
