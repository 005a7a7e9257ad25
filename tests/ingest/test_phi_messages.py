"""Quarantine messages and locations name a rule and a place, never a value (issue 17 item 2): a resourceType, a JSON
key, a file name, a manifest's transactionTime, type or count, an OperationOutcome code, a structure error's input
or an omics file's suffix holding a canary is never quoted; every such input is still accounted for."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.deid import Pseudonymizer
from tasks.ingest.accounting import BatchResult
from tasks.ingest.fhir import ingest_fhir
from tasks.ingest.landing import land
from tasks.ingest.omics import ingest_omics

SITE = "site-a"
KEYS = Pseudonymizer(b"k" * 32)
MARK = "canary"  # compared case-insensitively
MR = {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}
PATIENT = {"resourceType": "Patient", "id": "p1", "identifier": [{**MR, "value": "MRN0001"}], "gender": "female",
           "birthDate": "1970-01-01"}


def write(folder: Path, files: dict[str, object]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        text = body if isinstance(body, str) else "".join(
            (x if isinstance(x, str) else json.dumps(x)) + "\n" for x in body)  # type: ignore[union-attr]
        (folder / name).write_text(text)
    return folder


def said(result: BatchResult) -> str:
    """Everything an ingest says about its input outside the staged rows: records, summary facts, report."""
    records = [[r.source_uri, r.location, r.rule, r.message] for r in result.rejections]
    return json.dumps(records) + json.dumps(result.facts, default=str) + result.deid.to_json()


def ingest(tmp_path: Path, files: dict[str, object], **kw) -> BatchResult:
    src = write(tmp_path / "src", files)
    result = ingest_fhir(land(src, tmp_path / "landing", "fhir", SITE), tmp_path / "landing", KEYS, SITE, **kw)
    assert result.balanced(), (result.received, result.ingested, result.quarantined)
    return result


def test_resource_types_keys_and_values_are_not_quoted(tmp_path):
    bundle = {"resourceType": "Bundle", "id": "b1", "type": "collection", "entry": [
        {"resource": {"resourceType": "CanarySmithMrnTwelve", "id": "x1"}},  # type-shaped, not a FHIR type
        {"resource": {"resourceType": "CANARY Smith MRN0001", "id": "x2"}},
        {"resource": {"resourceType": "Organization", "id": "o1"}}]}  # no patient subject: not an event
    result = ingest(tmp_path, {
        "Patient.ndjson": [PATIENT, {**PATIENT, "id": "p2", "resourceType": "CanaryJohnSmith"},
                           {**PATIENT, "id": "p3", "CanaryKey": "x", "name": [{"family": "A", "canaryGiven": "B"}]},
                           {**PATIENT, "id": "p4", "birthDate": "canary-1931", "gender": ["CanaryGender"]}],
        "CanaryFileName.ndjson": [{**PATIENT, "id": "p5"}],
        "bundle.json": [bundle]})
    rules = sorted((r.rule, r.location) for r in result.rejections)
    assert rules == [("fhir.structure", "line 3"), ("fhir.structure", "line 4"), ("fhir.type", "line 1"),
                     ("fhir.type", "line 2"), ("fhir.unsupported_type", "line 1 entry 1"),
                     ("fhir.unsupported_type", "line 1 entry 2"), ("fhir.unsupported_type", "line 1 entry 3")]
    assert MARK not in said(result).lower()
    messages = {(r.rule, r.location): r.message for r in result.rejections}
    assert "Patient.<unknown-element>" in messages[("fhir.structure", "line 3")]
    assert "Patient.name[0].<unknown-element>" in messages[("fhir.structure", "line 3")]
    assert "Patient.birthDate" in messages[("fhir.structure", "line 4")]
    assert messages[("fhir.unsupported_type", "line 1 entry 3")].startswith("Organization ")


def test_keys_are_not_quoted_in_the_deid_report_without_structure_validation(tmp_path):
    hostile = {**PATIENT, "canaryKey": {"reference": "Practitioner/1"}, "CANARY KEY": 1}
    result = ingest(tmp_path, {"Patient.ndjson": [hostile]}, validate_structure=False)
    assert result.ingested == 1 and MARK not in said(result).lower()
    assert "Patient.<unknown-element>" in result.deid.to_json()


def test_export_metadata_is_checked_without_quoting_it(tmp_path):
    manifest = {"transactionTime": "CANARY Smith 2021", "request": "x", "output": [
        {"type": "Patient", "url": "Patient.ndjson", "count": 1},
        {"type": "CanaryType", "url": "Other.ndjson", "count": 0},
        {"type": "Condition", "url": "Condition.ndjson", "count": "CANARY"},
        "CANARY entry"], "deleted": [{"url": "deleted.ndjson"}], "error": [{"url": "errors.ndjson"}]}
    outcome = {"resourceType": "OperationOutcome", "issue": [
        {"severity": "CanarySeverity", "code": "CanaryCode", "diagnostics": "CANARY Smith"},
        {"severity": "error", "code": "not-found"}]}
    result = ingest(tmp_path, {"manifest.json": json.dumps(manifest), "Patient.ndjson": [PATIENT],
                               "Other.ndjson": [], "deleted.ndjson": ["CANARY not json", {"entry": "CANARY"}],
                               "errors.ndjson": [outcome, "CANARY"]})
    assert sorted((r.rule, r.location) for r in result.rejections) == [
        ("fhir.deleted_list", "line 1"), ("fhir.deleted_list", "line 2"), ("fhir.manifest", "output[2]"),
        ("fhir.manifest", "output[3]"), ("fhir.manifest", "transactionTime"), ("fhir.outcome_list", "line 2")]
    assert result.ingested == 1 and MARK not in said(result).lower()
    assert result.facts["operation_outcomes"] == {"other:other": 1, "error:not-found": 1}
    assert sorted(m["type"] or "-" for m in result.facts["manifest"].values()) == ["-", "Patient"]


def test_omics_messages_name_positions_not_names(tmp_path):
    src = write(tmp_path / "omics", {
        "sample_sheet.tsv": "sample_id\tmrn\nCANARY-MRN-1\tCANARY-MRN-1\n",
        "expression.tsv": "sample_id\tCanaryGene\tg2\nCANARY-MRN-1\t#VALUE!\t1\nCANARY-MRN-2\t1\t2\n",
        "export.canarysuffix": "not a matrix\n",
        "broken.csv": "sample_id,g1,g1\nCANARY-MRN-3,1,2\n"})
    result = ingest_omics(land(src, tmp_path / "landing", "omics", SITE), tmp_path / "landing", KEYS, SITE, None)
    assert result.balanced()
    assert sorted((r.rule, r.location) for r in result.rejections) == [
        ("omics.format", ""), ("omics.format", ""), ("omics.sample_sheet", "row 2"), ("omics.value", "row 1")]
    assert MARK not in said(result).lower()
