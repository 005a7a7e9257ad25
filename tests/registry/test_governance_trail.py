"""The governance trail through the CLI on a copy of the session's trained workspace: approvals, refusals and
rollbacks in `mmfm lineage` of the version (by NAME@alias, models:/NAME/V, NAME/V), a raw extract's lineage down to
the dataset version, and an alias moved outside mmfm failing `mmfm audit verify` and refused by `mmfm predict` unless
--allow-ungated (then recorded as ungated)."""

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


def _cli(ws: Path, *args: str):
    return runner.invoke(app, [*args, "-w", str(ws), "--json"])


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def _decisions(graph: dict) -> list[tuple[str, str, str]]:
    """(stage, decision, approver) of every promote/rollback event in a lineage answer, in ledger order."""
    found = sorted((n for n in graph["nodes"] if n.get("stage") in ("promote", "rollback")), key=lambda n: n["time"])
    return [(n["stage"], n["facts"]["decision"], n["facts"]["approver"]) for n in found]


@pytest.fixture(scope="module")
def ws(trained_workspace, tmp_path_factory) -> Path:
    from tasks import tracking

    root = tmp_path_factory.mktemp("governance") / "ws"
    shutil.copytree(trained_workspace[0].root, root, symlinks=True)
    (root / ".mmfm" / "mlflow.db").unlink()  # a registry of its own
    tracking.configure(root)
    return root


def test_approvals_refusals_rollbacks_and_ungated_aliases_leave_no_gap(ws):
    import mlflow

    client = mlflow.MlflowClient()
    assert _json(_cli(ws, "register"))["version"] == "1"
    assert _json(_cli(ws, "promote", f"{NAME}/1", "--approver", "dr-ada", "--reason", "first"))["decision"] \
        == "approved"
    for ref in (f"{NAME}@champion", f"models:/{NAME}/1", f"models:/{NAME}@champion", f"{NAME}/1"):
        graph = _json(_cli(ws, "lineage", ref))
        assert _decisions(graph) == [("promote", "approved", "dr-ada")], ref
        assert any(n.get("stage") == "register" for n in graph["nodes"])  # upstream: how the version was made
    assert "set through the gate" in _json(_cli(ws, "lineage", f"{NAME}@champion"))["alias"]["text"]

    # a worse second version is refused; the refusal is in its lineage
    report = ws / "models" / "evaluation" / "evaluation.json"
    original = report.read_text()
    worse = json.loads(original)
    worse["tasks"]["diagnosis"]["metrics"]["auroc_macro"]["value"] = -1.0
    report.write_text(json.dumps(worse))
    try:
        assert _json(_cli(ws, "register"))["version"] == "2"
    finally:
        report.write_text(original)
    assert _cli(ws, "promote", f"{NAME}/2", "--approver", "dr-ada", "--reason", "try").exit_code == 1
    assert _decisions(_json(_cli(ws, "lineage", f"{NAME}/2"))) == [("promote", "refused", "dr-ada")]
    assert _json(_cli(ws, "audit", "verify"))["registry"]["ok"] is True

    # the MLflow UI's "Promote model": the alias moves with no gate and no record
    client.set_registered_model_alias(NAME, "champion", "2")
    verify = _cli(ws, "audit", "verify")
    assert verify.exit_code == 1
    problems = json.loads(verify.stdout.strip().splitlines()[-1])["registry"]["problems"]
    assert any(f"{NAME}@champion points to version 2" in p and "version 1" in p for p in problems), problems
    refused = runner.invoke(app, ["predict", "--model", f"{NAME}@champion", "-w", str(ws)])
    assert refused.exit_code == 1 and f"{NAME}@champion points to version 2" in refused.output
    assert "UngatedAlias" not in refused.output
    scored = _json(_cli(ws, "predict", "--model", f"{NAME}@champion", "--allow-ungated"))
    assert scored["ungated"] is True and scored["model_version"] == f"{NAME}/2"
    predict_event = [e for e in Ledger.of_workspace(ws).events() if e.stage == "predict"][-1]
    assert predict_event.facts["ungated"] is True and predict_event.facts["alias"] == "champion"
    assert {"uri": f"models:/{NAME}/2", "sha256": client.get_model_version(NAME, "2").tags["mmfm.sha256.manifest"]} \
        in predict_event.inputs

    # rollback through mmfm gives the alias back to v1, recorded in the lineage of both versions; verify passes again
    client.set_registered_model_tag(NAME, "mmfm.alias_history.champion", json.dumps(["1", "2"]))
    back = _json(_cli(ws, "rollback", "--approver", "dr-bea", "--reason", "v2 misbehaves"))
    assert (back["from_version"], back["to_version"]) == ("2", "1")
    assert _decisions(_json(_cli(ws, "lineage", f"{NAME}@champion"))) == [
        ("promote", "approved", "dr-ada"), ("rollback", "rolled_back", "dr-bea")]
    assert ("rollback", "rolled_back", "dr-bea") in _decisions(_json(_cli(ws, "lineage", f"models:/{NAME}/2")))
    assert _json(_cli(ws, "audit", "verify"))["ok"] is True

    # a raw extract file, as received, leads to the dataset version the model was trained on
    raw = next(p for p in sorted((ws / "extracts").rglob("*.ndjson")))
    graph = _json(_cli(ws, "lineage", str(raw)))
    assert graph["matched"] == "extract" and raw.name not in json.dumps(graph)
    versions = [n["facts"]["dataset_version"] for n in graph["nodes"] if n.get("stage") == "version"]
    assert versions and versions[-1] == client.get_model_version(NAME, "1").tags["mmfm.dataset_version"]
