"""The published model card names the real version, embeds its images, fills lineage and approvals, refuses altered
artifacts, and the registry's descriptions point to it. Fast: a tiny pyfunc carrying a staged card on a real MLflow
(SQLite); slow: `mmfm register`/`promote` on a copy of the trained workspace."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import mlflow
import pytest

from tasks import tags
from tasks.atomic import write_json
from tasks.lineage import Ledger
from tasks.registry.card_publish import publish_model_card
from tasks.registry.integrity import IntegrityError, hash_tree, manifest_tags
from tasks.registry.model_card import render_model_card
from tests.registry.test_card_content import staged_card

NAME = "card-test"


class _Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


def _downloaded_text(client, run_id: str, path: str, dst: Path) -> str:
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst))).read_text()


@pytest.fixture()
def registered(tmp_path) -> tuple[Path, mlflow.MlflowClient, str]:
    """A workspace-like root with a registered version whose artifacts are a staged card + evaluation, hashed as
    `mmfm register` hashes them, and a register ledger event."""
    root, staging = tmp_path / "ws", tmp_path / "staging"
    (root / ".mmfm").mkdir(parents=True)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    # an explicit experiment, not mlflow.set_experiment: that is process-wide and would outlive this test
    experiment = mlflow.MlflowClient().create_experiment("cards", artifact_location=(tmp_path / "store").as_uri())
    card = staged_card(staging)
    write_json(staging / "card" / "model_card.json", card)
    with mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=_Constant(),
                                       artifacts={"card": str(staging / "card"),
                                                  "evaluation": str(staging / "evaluation")})
    mv = mlflow.register_model(info.model_uri, NAME)
    client = mlflow.MlflowClient()
    local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{NAME}/{mv.version}",
                                                dst_path=str(tmp_path / "dl"))
    event = Ledger.of_workspace(root).append("register", f"{NAME}/{mv.version}", facts={"x": 1})
    for key, value in {**manifest_tags(hash_tree(local)), tags.key("lineage_event"): event.event_id,
                       tags.key("dataset_version"): "ds-1"}.items():
        client.set_model_version_tag(NAME, mv.version, key, value)
    assert run.info.run_id == mv.run_id
    yield root, client, str(mv.version)
    mlflow.set_tracking_uri(None)


def test_published_card_names_the_version_and_fills_lineage_and_descriptions(registered, tmp_path):
    root, client, version = registered
    out = publish_model_card(root, client, NAME, version)
    mv = client.get_model_version(NAME, version)
    assert out["verdict"] == "not judged" and out["artifact"] == f"runs:/{mv.run_id}/card/model_card.html"
    page = _downloaded_text(client, mv.run_id, "card/model_card.html", tmp_path / "a")
    assert f"Model card: {NAME} version {version}" in page and "(staged" not in page
    assert re.search(r'id="mmfm-verdict" data-verdict="not judged"', page)
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'<img src="([^"]+)"', page))
    assert "{'" not in page and mv.run_id in page and mv.tags[tags.key("lineage_event")] in page
    assert "eval-run" in page and "ft-risk" in page and "pre-run" in page and "labs 2.0.0" in page
    summary = json.loads(_downloaded_text(client, mv.run_id, "card/model_card.json", tmp_path / "b"))
    assert summary["verdict"] == "not judged" and summary["version"] == version
    markdown = _downloaded_text(client, mv.run_id, "card/model_card.md", tmp_path / "c")
    assert "![diagnosis: roc diagnosis](evaluation/plots/roc_diagnosis.png)" in markdown
    assert mlflow.artifacts.list_artifacts(run_id=mv.run_id, artifact_path="card/evaluation/plots")  # beside the .md
    assert out["artifact"] in mv.description and "not judged" in mv.description
    assert "card/model_card.html" in client.get_registered_model(NAME).description


def test_card_shows_each_decision_with_approver_reason_time_and_ledger_event(registered, tmp_path):
    root, client, version = registered
    at = "2026-01-02T03:04:05+00:00"
    verdict = {"decision": "refused", "alias": "champion", "approver": "dr-review", "reason": "quarterly review",
               "at": at, "reasons": ["not better than late_fusion"],
               "checks": [{"rule": "beats_baselines", "passed": False, "value": {"late_fusion": 0.02},
                           "detail": "not better than late_fusion", "excepted": False, "reason": None}]}
    client.set_model_version_tag(NAME, version, tags.key("refused.champion.20260102T030405Z"), json.dumps(verdict))
    event = Ledger.of_workspace(root).append("promote", f"{NAME}/{version}/champion/{at}", facts={})
    publish_model_card(root, client, NAME, version)
    page = _downloaded_text(client, client.get_model_version(NAME, version).run_id, "card/model_card.html", tmp_path)
    assert re.search(r'id="mmfm-verdict" data-verdict="refused"', page)
    row = f"<td>{at}</td><td>refused</td><td>champion</td><td>dr-review</td><td>quarterly review</td>" \
          f"<td>{event.event_id}</td>"
    assert row in page and "not better than late_fusion" in page


def test_altered_card_data_is_not_published(registered, tmp_path):
    root, client, version = registered
    stored = next((tmp_path / "store").rglob("artifacts/card/model_card.json"))  # the registered model's own copy
    stored.write_text(stored.read_text().replace("0.812", "0.999"))
    with pytest.raises(IntegrityError, match="model_card.json"):
        publish_model_card(root, client, NAME, version)
    assert not client.get_model_version(NAME, version).description


def test_a_staged_card_without_version_says_so():
    markdown, page = render_model_card({"name": "m"})
    assert "staged: the registry assigns the version" in page and 'data-verdict="not judged"' in page
    assert "not reported" in markdown


@pytest.mark.slow
def test_register_publishes_the_card_of_the_real_version(trained_workspace, tmp_path_factory):
    from typer.testing import CliRunner

    from flows.cli import app
    from tasks import tracking

    root = tmp_path_factory.mktemp("card") / "ws"
    shutil.copytree(trained_workspace[0].root, root, symlinks=True)
    (root / ".mmfm" / "mlflow.db").unlink()  # a registry of its own
    tracking.configure(root)
    result = CliRunner().invoke(app, ["register", "-w", str(root), "--json"])
    assert result.exit_code == 0, result.output
    registered = json.loads(result.stdout.strip().splitlines()[-1])
    client = mlflow.MlflowClient()
    mv = client.get_model_version("mmfm-multimodal", registered["version"])
    dst = tmp_path_factory.mktemp("card-dl")
    page = _downloaded_text(client, mv.run_id, "card/model_card.html", dst)
    assert f"Model card: mmfm-multimodal version {registered['version']}" in page
    images = re.findall(r'<img src="([^"]+)"', page)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    assert "{'" not in page and "http://" not in page and "https://" not in page
    for title in ("Diagnosis", "One-year mortality risk", "Survival ranking"):
        assert re.search(rf"<h3>{title}[^<]*</h3>\s*<table>", page), title
    assert registered["model_card"] in mv.description
    assert "card/model_card.html" in client.get_registered_model("mmfm-multimodal").description
