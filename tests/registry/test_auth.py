"""The registry's write protection is MLflow's basic-auth app: these tests pin what it does and does not refuse.

Finding (MLflow 3.17.2, workspaces off): `default_permission = READ` does NOT stop an authenticated user from
creating a registered model (creation only checks "not denied"; the creator gets MANAGE on the new model). It does
stop them from setting an alias on a model they do not manage (promote), and from registering into a model
they do not manage or logging runs into an experiment they do not own (register into a governed model name).
Blocking the creation of *new* model names needs an explicit DENY grant on registered_model "*" or workspaces mode.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pytest

from tests.registry.mlflow_server import mlflow_server

pytest.importorskip("flask_wtf", reason="the basic-auth app needs mlflow[auth] (Flask-WTF)")
pytestmark = pytest.mark.slow  # the server takes ~6-20 s to start on a shared 2-core machine

API = "/api/2.0/mlflow"
READER = ("reader", "reader-password-123")
GOVERNED = "mmfm-governed"
GRANT_USER_PERMISSION = "/api/3.0/mlflow/users/permissions/grant"  # mlflow.server.auth.routes (import costs ~5 s)


def call(url: str, path: str, body: dict, auth: tuple[str, str] | None = None, method: str = "POST"):
    """(HTTP status, parsed body or text) of one REST call."""
    full = path if path.startswith("/api/") else f"{API}{path}"
    request = urllib.request.Request(f"{url}{full}", data=json.dumps(body).encode(), method=method,
                                     headers={"Content-Type": "application/json"})
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow-auth"), auth=True) as srv:
        admin = (srv.admin_username, srv.admin_password)
        for user in (READER, ("reader2", "reader2-password-123")):
            assert call(srv.url, "/users/create", {"username": user[0], "password": user[1]}, admin)[0] == 200
        assert call(srv.url, "/registered-models/create", {"name": GOVERNED}, admin)[0] == 200
        yield srv


def test_anonymous_request_is_401(server):
    status, _ = call(server.url, "/registered-models/create", {"name": "anon-model"})
    assert status == 401


def test_reader_can_read_but_not_promote(server):
    status, body = call(server.url, f"/registered-models/get?name={GOVERNED}", {}, READER, method="GET")
    assert status == 200 and body["registered_model"]["name"] == GOVERNED
    status, _ = call(server.url, "/registered-models/alias", {"name": GOVERNED, "alias": "champion", "version": "1"},
                     READER)
    assert status == 403


def test_reader_create_is_allowed_by_default_and_refused_after_deny(server):
    reader2 = ("reader2", "reader2-password-123")
    assert call(server.url, "/registered-models/create", {"name": "reader2-own"}, reader2)[0] == 200
    admin = (server.admin_username, server.admin_password)
    grant = {"username": "reader2", "resource_type": "registered_model", "resource_id": "*", "permission": "DENY"}
    assert call(server.url, GRANT_USER_PERMISSION, grant, admin)[0] == 200
    assert call(server.url, "/registered-models/create", {"name": "reader2-second"}, reader2)[0] == 403


def test_admin_through_env_vars_registers_tags_and_promotes(server, monkeypatch, tmp_path):
    from mlflow import MlflowClient

    from tasks.registry.integrity import hash_tree, manifest_from_tags, manifest_tags

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", server.admin_username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.admin_password)
    client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "weights.bin").write_bytes(b"\x00\x01" * 100)
    run = client.create_run("0")
    client.log_artifacts(run.info.run_id, str(model_dir), "model")
    client.create_registered_model("mmfm-env")
    version = client.create_model_version("mmfm-env", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    hashes = hash_tree(model_dir)
    for key, value in manifest_tags(hashes).items():
        client.set_model_version_tag("mmfm-env", version.version, key, value)
    client.set_registered_model_alias("mmfm-env", "champion", version.version)
    champion = client.get_model_version_by_alias("mmfm-env", "champion")
    assert champion.version == version.version
    assert manifest_from_tags(champion.tags) == hashes


def test_the_cli_authenticates_through_env_and_the_server_refuses_readers_and_anonymous(
        server, trained_workspace, tmp_path, monkeypatch):
    import shutil

    from typer.testing import CliRunner

    from flows.cli import app
    from tasks.lineage import Ledger

    runner = CliRunner()
    ws = tmp_path / "ws"
    shutil.copytree(trained_workspace[0].root, ws, symlinks=True)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", server.admin_username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.admin_password)
    registered = runner.invoke(app, ["register", "--name", "mmfm-cli", "-w", str(ws), "--json"])
    assert registered.exit_code == 0, registered.output
    assert json.loads(registered.stdout.strip().splitlines()[-1])["version"] == "1"

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", READER[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", READER[1])
    refused = runner.invoke(app, ["promote", "mmfm-cli/1", "--reason", "r", "-w", str(ws)])  # approver: "reader"
    assert refused.exit_code == 1 and "MLflow refused" in refused.output
    assert "403" in refused.output or "PERMISSION_DENIED" in refused.output, refused.output
    # register as the reader into a governed model (created by the admin): the run and the version are writes
    denied = runner.invoke(app, ["register", "--name", GOVERNED, "-w", str(ws)])
    assert denied.exit_code == 1 and "MLflow refused" in denied.output, denied.output
    assert "403" in denied.output or "PERMISSION_DENIED" in denied.output, denied.output

    # the approver recorded is the authenticated user: nobody signs for someone else
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", server.admin_username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.admin_password)
    impersonated = runner.invoke(app, ["promote", "mmfm-cli/1", "--approver", "dr-x", "--reason", "r", "-w", str(ws)])
    assert impersonated.exit_code == 1 and "not the user the MLflow server authenticated" in impersonated.output
    runner.invoke(app, ["promote", "mmfm-cli/1", "--reason", "first", "-w", str(ws)])  # approved or refused: recorded
    decision = [e for e in Ledger.of_workspace(ws).events() if e.stage == "promote"][-1]
    assert decision.facts["approver"] == server.admin_username and decision.facts["approver_authenticated"] is True
    assert decision.params["approver"] == server.admin_username

    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    anonymous = runner.invoke(app, ["register", "--name", "mmfm-cli", "-w", str(ws)])
    assert anonymous.exit_code == 1 and "MLflow refused" in anonymous.output
    assert "401" in anonymous.output or "nauthenticated" in anonymous.output or "credentials" in anonymous.output, \
        anonymous.output
