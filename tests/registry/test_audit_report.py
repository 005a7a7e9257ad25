"""The audit report of a registered model: every step from raw extract sha256 to today's alias, its gaps, no PHI.

A copy of the session's trained workspace is registered and promoted once for the module (hence `slow`); tests that
break something work on a further copy. Rendering and tag parsing are also tested on hand-made input.
"""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3

import pytest

from tasks.registry.audit_gather import NO_MONITORING, _decisions, build_audit
from tasks.registry.audit_render import render_audit, write_audit

STAGES = ("ingest", "validate", "version", "pretrain", "finetune", "evaluate", "register", "promote")
MARKUP = "<script>alert('x')</script>"
REASON = f"beats nothing yet {MARKUP} & fits the intended use"
APPROVER = "dr-auditor"


@pytest.fixture(scope="module")
def registered(trained_workspace, tmp_path_factory):
    """A copy of the session's trained workspace (and of its MLflow store) with version 1 registered (challenger) and
    then promoted to champion (or refused: the report must show a refusal with approver and reason too)."""
    from flows.promote import promote_flow
    from flows.register import register_flow
    from tasks.registry.promotion import PromotionRefused
    from tasks.workspace import Workspace

    source, published, _ = trained_workspace
    ws = Workspace(tmp_path_factory.mktemp("audit") / "ws")
    shutil.copytree(source.root, ws.root, symlinks=True)  # with its MLflow store: the training runs are audited
    reg = register_flow(workspace=ws.root)
    ref = f"{reg['name']}@champion"
    try:
        promote_flow(workspace=ws.root, model=f"{reg['name']}/{reg['version']}", alias="champion",
                     approver=APPROVER, reason=REASON)
    except PromotionRefused:
        ref = f"{reg['name']}/{reg['version']}"
    with open(ws.extracts / "cohort" / "truth" / "patients.tsv") as f:
        known = [v for row in csv.DictReader(f, delimiter="\t") for v in (row["mrn"], row["fhir_id"])]
    return ws, published, {**reg, "ref": ref}, known


@pytest.fixture(scope="module")
def audit(registered):
    ws, _, reg, _ = registered
    return build_audit(ws.root, reg["ref"])


def _copy(ws, tmp_path):
    dst = tmp_path / "ws-copy"
    shutil.copytree(ws.root, dst, symlinks=True)
    return dst


@pytest.mark.slow
def test_report_walks_from_each_extract_sha256_to_the_alias(registered, audit):
    from tasks.lineage import Ledger

    ws, published, reg, _ = registered
    assert audit["complete"] is True, audit["gaps"]
    assert audit["gaps"] == []
    markdown, html = render_audit(audit)
    manifests = {i["sha256"] for e in Ledger.of_workspace(ws.root).events() if e.stage == "ingest" for i in e.inputs}
    assert manifests and {x["sha256"] for x in audit["extracts"]} == manifests
    for text in (markdown, html):
        assert published["dataset_version"] in text
        assert all(sha in text for sha in manifests)
        assert all(f"| {stage} |" in text or f"<td>{stage}</td>" in text for stage in STAGES)
        assert APPROVER in text and "fits the intended use" in text
    titles = [line.removeprefix("## ") for line in markdown.splitlines() if line.startswith("## ")]
    assert titles[:2] == ["Summary", "Contents"]
    assert [t.split(" ", 1)[1] for t in titles[2:]] == [
        "Raw extracts", "De-identification", "Validation and data contracts", "Dataset version", "Training runs",
        "Evaluation", "Registration", "Approvals, refusals and rollbacks", "Monitoring", "Integrity and completeness"]
    assert {r["stage"] for r in audit["runs"]} == {"pretrain", "finetune", "evaluate", "register"}
    assert audit["registration"]["lineage_event"] == reg["lineage_event"]
    assert audit["monitoring"]["status"] == NO_MONITORING


@pytest.mark.slow
def test_html_and_markdown_escape_markup(audit):
    markdown, html = render_audit(audit)
    assert MARKUP not in html and "&lt;script&gt;" in html
    assert MARKUP not in markdown and "&lt;script&gt;" in markdown


@pytest.mark.slow
def test_written_report_holds_no_phi(registered, tmp_path):
    from tasks.registry.phi_scan import scan_artifacts

    ws, _, reg, known = registered
    out = write_audit(ws.root, reg["ref"], tmp_path / "audit")
    assert out["complete"] is True and out["markdown"].exists() and out["html"].exists()
    assert known and scan_artifacts(tmp_path / "audit", known_identifiers=known) == []


@pytest.mark.slow
def test_written_report_summarises_links_and_counts(registered, tmp_path):
    """What a committee opens: verdict first, contents and artifact links that resolve from the page's folder,
    free-text de-identification counted (the cohort's notes name their patients), gate rows with values, hash
    tables folded, and the JSON beside the page carrying the same verdict."""
    from tests.registry.test_audit_summary import check_page

    ws, _, reg, _ = registered
    out = write_audit(ws.root, reg["ref"], ws.root / "data" / "audit-test")
    html = out["html"].read_text()
    page = check_page(html, out["html"].parent)
    assert page.verdicts == [out["verdict"]] == [json.loads(out["json"].read_text())["verdict"]] == ["complete"]
    linked = {h.split("/")[-1] for h in page.hrefs if not h.startswith("#")}
    assert {"model_card.html", "index.html", "validation.json", "evaluation.md"} <= linked, linked
    assert any(h.endswith(".png") for h in page.hrefs)
    audit = json.loads(out["json"].read_text())
    totals = audit["deid"]["totals"]
    assert totals["text_fields"] > 0 and sum(r["text_replacements"].get("NAME", 0) for r in audit["deid"]["reports"])
    assert f"Free-text fields scrubbed</strong>: {totals['text_fields']}" in html
    summary = html[:html.index('id="contents"')]
    assert APPROVER in summary and "fits the intended use" in summary
    assert all(f"<td>{step}" in summary for step in ("raw extract", "ingest and de-identify", "validate",
                                                     "dataset version", "pretrain", "finetune", "evaluate",
                                                     "register", "promote / alias", "alias today"))
    gate = [line for line in out["markdown"].read_text().splitlines() if "| subgroup_gap |" in line]
    assert gate and all("gap: " in line and "| not reported |" not in line for line in gate)
    assert "Single-modality baselines" in html and "not measured by this evaluation" not in html


@pytest.mark.slow
def test_unknown_lineage_event_is_a_gap(registered):
    import mlflow

    from tasks import tracking

    ws, _, reg, _ = registered
    tracking.configure(ws.root)
    client = mlflow.MlflowClient()
    client.set_model_version_tag(reg["name"], reg["version"], "mmfm.lineage_event", "f" * 32)
    try:
        found = build_audit(ws.root, f"{reg['name']}/{reg['version']}")
    finally:
        client.set_model_version_tag(reg["name"], reg["version"], "mmfm.lineage_event", reg["lineage_event"])
    assert found["complete"] is False
    assert any("f" * 32 in g and "does not exist in the ledger" in g for g in found["gaps"])


@pytest.mark.slow
def test_deleted_upstream_event_breaks_completeness(registered, tmp_path):
    ws, _, reg, _ = registered
    copy = _copy(ws, tmp_path)
    con = sqlite3.connect(copy / ".mmfm" / "lineage.db")
    con.execute("DROP TRIGGER events_no_delete")
    con.execute("DELETE FROM events WHERE stage = 'validate'")
    con.commit()
    con.close()
    found = build_audit(copy, f"{reg['name']}/{reg['version']}")
    assert found["complete"] is False
    assert any("no validate event" in g for g in found["gaps"])
    assert any(g.startswith("Ledger verification:") and "gone" in g for g in found["gaps"])
    assert any("written by no recorded event" in g and "data/curated" in g for g in found["gaps"])


@pytest.mark.slow
def test_monitoring_results_are_summarised_when_present(registered, tmp_path):
    ws, _, reg, _ = registered
    copy = _copy(ws, tmp_path)
    report = copy / "data" / "monitoring" / "2026-w01" / "drift.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"drifted": True, "psi": {"age": 0.31}, "site": "not-a-number-so-left-out"}))
    found = build_audit(copy, f"{reg['name']}/{reg['version']}")
    (entry,) = found["monitoring"]["reports"]
    assert entry["values"] == {"drifted": True, "psi.age": 0.31}
    assert "not-a-number" not in render_audit(found)[0]


# --- without a workspace ---------------------------------------------------------------------------------------------

def test_decision_tags_are_parsed_and_ordered():
    tags = {"mmfm.approved.champion.20260102T000000Z": json.dumps({"approver": "a", "reason": "r", "at": "2026-01-02"}),
            "mmfm.rolled_back.champion.20260103T000000Z": json.dumps({"approver": "b", "at": "2026-01-03",
                                                                      "from_version": "2", "to_version": "1"}),
            "mmfm.refused.prod.v2.20260101T000000Z": json.dumps({"approver": "c", "at": "2026-01-01",
                                                                 "reasons": ["x"], "secret": "dropped"}),
            "mmfm.metrics": "{}"}
    got = _decisions(tags)
    assert [(d["decision"], d["alias"]) for d in got] == [("refused", "prod.v2"), ("approved", "champion"),
                                                           ("rolled_back", "champion")]
    assert "secret" not in got[0]


def _bare_audit() -> dict:
    """The smallest audit `render_audit` accepts: nothing found anywhere, one gap."""
    return {"model": {"ref": "m/1", "name": "m", "version": "1", "uri": "models:/m/1"}, "generated_at": "now",
            "extracts": [], "deid": {"reports": [], "profiles": [], "totals": {}, "actions": {}}, "validation": None,
            "dataset": {"dataset_version": None}, "runs": [], "evaluation": None,
            "registration": {"name": "m", "version": "1", "created": None, "run_id": None, "status": "READY",
                             "tags": {}, "manifest": {"sha256": None, "files": 0}, "lineage_event": None,
                             "decisions": [{"decision": "refused", "alias": "champion", "stamp": "x",
                                            "approver": "<b>bob</b>", "reason": "a | b", "reasons": ["r"]}],
                             "aliases_now": {}, "alias_history": {}},
            "monitoring": {"status": NO_MONITORING, "reports": [], "events": []},
            "ledger": {"events": [], "verify": {"ok": True, "events_checked": 0, "artifacts_checked": 0,
                                                "head": "0" * 64, "notes": []}},
            "complete": False, "gaps": ["The version carries no lineage event id <i>."], "notes": []}


def test_render_escapes_and_says_what_is_missing():
    markdown, html = render_audit(_bare_audit())
    assert "<b>bob</b>" not in html and "&lt;b&gt;bob&lt;/b&gt;" in html and "&lt;i&gt;" in html
    assert "<b>bob</b>" not in markdown and "a \\| b" in markdown
    assert "**Verdict: gaps.** Gaps: 1 problem(s)" in markdown
    assert NO_MONITORING in markdown and "not reported" in markdown
    assert html.count("<h2>") == 12 and html.index("Raw extracts") < html.index("Integrity and completeness")
    assert 'id="mmfm-verdict" data-verdict="gaps"' in html and html.index("Summary") < html.index("Raw extracts")
