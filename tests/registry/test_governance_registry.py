"""The registry against the ledger, on a real MLflow SQLite store and a real ledger (no training): an alias or tag
changed outside mmfm is named by `check_registry` and refused by `require_gated`; approvals are in the lineage of the
version; the approver is the authenticated user where MLflow authenticates users."""

from __future__ import annotations

import json

import pytest

from tasks import tags
from tasks.lineage import Ledger, lineage
from tasks.registry.gated import UngatedAlias, require_gated, split_ref
from tasks.registry.integrity import manifest_tags
from tasks.registry.promotion import PromotionRefused, approver_of
from tasks.registry.registry_audit import check_registry

NAME = "gov-model"
AT = "2026-12-03T10:00:00+00:00"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Two registered versions, v1 promoted to champion through the gate, as the ledger and the registry hold them."""
    import mlflow

    root = tmp_path_factory.mktemp("gov")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(NAME)
    ledger = Ledger.of_workspace(root)
    events = {}
    for v, weights in (("1", "aa"), ("2", "bb")):
        (root / f"art{v}").mkdir()
        client.create_model_version(NAME, source=str(root / f"art{v}"))
        manifest = manifest_tags({"weights.bin": weights * 32})
        for key, value in manifest.items():
            client.set_model_version_tag(NAME, v, key, value)
        events[v] = ledger.append("register", f"{NAME}/{v}", params={"name": NAME, "alias": "challenger"},
                                  facts={"model_version": f"{NAME}/{v}", "dataset_version": "dv1",
                                         "artifact_manifest_sha256": manifest[tags.key("sha256.manifest")]})
        client.set_model_version_tag(NAME, v, tags.key("lineage_event"), events[v].event_id)
        client.set_model_version_tag(NAME, v, tags.DATASET_VERSION, "dv1")
        client.set_registered_model_alias(NAME, "challenger", v)
    verdict = {"decision": "approved", "alias": "champion", "approver": "dr-ada", "approver_authenticated": False,
               "reason": "first model", "at": AT, "reasons": [], "champion_before": None}
    client.set_model_version_tag(NAME, "1", tags.key("approved.champion.20261203T100000Z"), json.dumps(verdict))
    manifest1 = client.get_model_version(NAME, "1").tags[tags.key("sha256.manifest")]
    ledger.append("promote", f"{NAME}/1/champion/{AT}", inputs=[{"uri": f"models:/{NAME}/1", "sha256": manifest1}],
                  params={"alias": "champion", "approver": "dr-ada"}, facts={"model_version": f"{NAME}/1", **verdict})
    client.set_registered_model_alias(NAME, "champion", "1")
    return root, client


def test_a_consistent_registry_passes_and_the_approval_is_in_the_versions_lineage(registry):
    root, client = registry
    report = check_registry(root, client)
    assert report.ok, report.text()
    assert report.aliases_checked == 2 and report.tags_checked >= 7 and report.models_checked == [NAME]

    graph = lineage(Ledger.of_workspace(root), f"models:/{NAME}/1")
    promote = [n for n in graph["nodes"] if n.get("stage") == "promote"]
    assert promote and promote[0]["facts"]["approver"] == "dr-ada" and promote[0]["facts"]["decision"] == "approved"
    assert "APPROVED for champion by dr-ada: first model" in graph["text"]
    assert any(n.get("stage") == "register" for n in graph["nodes"])  # upstream: the version came from register

    assert require_gated(root, client, f"{NAME}@champion") == {"name": NAME, "version": "1", "alias": "champion",
                                                               "gated": True}
    assert require_gated(root, client, f"models:/{NAME}/2")["gated"] is True  # an explicit version: no check


def test_an_alias_moved_outside_mmfm_is_named_refused_and_allowed_only_when_asked(registry):
    root, client = registry
    client.set_registered_model_alias(NAME, "champion", "2")  # the MLflow UI's "Promote model" does this
    try:
        report = check_registry(root, client)
        assert not report.ok
        line = next(p for p in report.problems if f"{NAME}@champion" in p)
        assert "points to version 2" in line and "version 1" in line and "promote event" in line

        with pytest.raises(UngatedAlias) as refused:
            require_gated(root, client, f"{NAME}@champion")
        assert f"{NAME}@champion points to version 2" in str(refused.value) and "version 1" in str(refused.value)
        allowed = require_gated(root, client, f"{NAME}@champion", allow_ungated=True)
        assert allowed["gated"] is False and allowed["version"] == "2"
        with pytest.raises(UngatedAlias, match="at registration, not through the gate"):  # set by mmfm, not gated
            require_gated(root, client, f"{NAME}@challenger")
    finally:
        client.set_registered_model_alias(NAME, "champion", "1")
    assert check_registry(root, client).ok


def test_tags_changed_outside_mmfm_are_named(registry):
    root, client = registry
    forged = tags.key("approved.champion.20261203T110000Z")
    original = client.get_model_version(NAME, "1").tags[tags.key("approved.champion.20261203T100000Z")]
    client.set_model_version_tag(NAME, "2", forged, json.dumps({"approver": "someone"}))
    client.set_model_version_tag(NAME, "2", tags.DATASET_VERSION, "dv-edited")
    client.delete_model_version_tag(NAME, "1", tags.key("approved.champion.20261203T100000Z"))
    try:
        problems = "\n".join(check_registry(root, client).problems)
        assert f"tag {forged} of {NAME}/2 matches no promote/rollback event" in problems
        assert f"tag {tags.DATASET_VERSION} of {NAME}/2 is 'dv-edited'" in problems and "'dv1'" in problems
        assert f"tag {tags.key('approved.champion.20261203T100000Z')} of {NAME}/1 is gone" in problems
    finally:
        client.delete_model_version_tag(NAME, "2", forged)
        client.set_model_version_tag(NAME, "2", tags.DATASET_VERSION, "dv1")
        client.set_model_version_tag(NAME, "1", tags.key("approved.champion.20261203T100000Z"), original)
    assert check_registry(root, client).ok


def test_references_a_user_may_type():
    assert split_ref("m@champion") == ("m", None, "champion")
    assert split_ref("models:/m@champion") == ("m", None, "champion")
    assert split_ref("models:/m/3") == ("m", "3", None) and split_ref("m/3") == ("m", "3", None)
    for bad in ("m", "data/staged", "models:/m/", "@x"):
        with pytest.raises(ValueError):
            split_ref(bad)


def test_the_approver_is_the_authenticated_user_where_mlflow_authenticates(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    assert approver_of("dr-ada", "sqlite:///x.db") == ("dr-ada", False)
    with pytest.raises(PromotionRefused, match="--approver"):
        approver_of(None, "sqlite:///x.db")  # nothing authenticates: the approver must be named
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "dr-bob")
    assert approver_of(None, "http://127.0.0.1:5000") == ("dr-bob", True)
    assert approver_of("dr-bob", "http://127.0.0.1:5000") == ("dr-bob", True)
    with pytest.raises(PromotionRefused, match="not the user the MLflow server authenticated"):
        approver_of("dr-ada", "http://127.0.0.1:5000")  # one person cannot sign for another
    assert approver_of("dr-ada", "sqlite:///x.db") == ("dr-ada", False)  # a local store authenticates nobody


def test_a_version_made_outside_mmfm_is_named(registry):
    root, client = registry
    (root / "art3").mkdir(exist_ok=True)
    made = client.create_model_version(NAME, source=str(root / "art3"), tags={tags.DATASET_VERSION: "dv1"})
    try:
        problems = check_registry(root, client).problems
        assert any(p.startswith(f"{NAME}/{made.version} carries mmfm tags but the ledger records no register event")
                   for p in problems), problems
    finally:
        client.delete_model_version(NAME, made.version)
    assert check_registry(root, client).ok
