"""FHIR as servers and generators write it besides bulk NDJSON: an indented Bundle document per file, entries named
by `urn:uuid:` fullUrls with no id, and two Patients of one extract sharing an MRN."""

from __future__ import annotations

import json
import uuid

from tasks.deid import Pseudonymizer
from tasks.ingest.fhir import ingest_fhir
from tasks.ingest.landing import land

KEYS = Pseudonymizer(b"d" * 32)
MR = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}


def _patient(mrn: str, family: str, pid: str | None = None) -> dict:
    res = {"resourceType": "Patient", "identifier": [{"type": MR, "system": "urn:oid:1.2.3", "value": mrn}],
           "name": [{"family": family, "given": ["Ada"]}], "gender": "female", "birthDate": "1970-02-03"}
    return res | ({"id": pid} if pid else {})


def _condition(subject: str, cid: str | None = None) -> dict:
    res = {"resourceType": "Condition", "subject": {"reference": subject}, "recordedDate": "2020-05-06",
           "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]}}
    return res | ({"id": cid} if cid else {})


def _ingest(tmp_path, files: dict[str, str]):
    src = tmp_path / "export"
    src.mkdir()
    for name, text in files.items():
        (src / name).write_text(text, encoding="utf-8")
    extract = land(src, tmp_path / "landing", "fhir", "site-a")
    return ingest_fhir(extract, tmp_path / "landing", KEYS, "site-a")


def test_an_indented_transaction_bundle_with_urn_uuid_entries_is_ingested(tmp_path):
    p, c = str(uuid.uuid4()), str(uuid.uuid4())
    bundle = {"resourceType": "Bundle", "id": "b1", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{p}", "resource": _patient("MRN-77", "Quillfeather"),
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": f"urn:uuid:{c}", "resource": _condition(f"urn:uuid:{p}"),
         "request": {"method": "POST", "url": "Condition"}}]}
    result = _ingest(tmp_path, {"patient-bundle.json": json.dumps(bundle, indent=2)})
    assert result.received == 2 and result.ingested == 2 and not result.rejections
    patient = KEYS.patient("site-a", "MRN-77")
    assert [r["patient_id"] for r in result.rows["patients"]] == [patient]
    assert [(r["patient_id"], r["code"]) for r in result.rows["conditions"]] == [(patient, "38341003")]
    assert "Quillfeather" not in json.dumps(result.rows)


def test_a_json_file_holding_ndjson_is_still_read_line_by_line(tmp_path):
    lines = [json.dumps(_patient("MRN-1", "Brightwater", "p1")), json.dumps(_condition("Patient/p1", "c1"))]
    result = _ingest(tmp_path, {"export.json": "\n".join(lines) + "\n"})
    assert (result.received, result.ingested) == (2, 2)


def test_two_patients_sharing_an_mrn_are_quarantined_not_merged(tmp_path):
    """One MRN, two FHIR ids: the same person twice or two people under one number; nothing says which, and
    staging both would give one pseudonym two rows (validation then blocks the whole dataset)."""
    patients = [_patient("MRN-5", "Oakhurst", "a"), _patient("MRN-5", "Fenwick", "b"), _patient("MRN-6", "Lee", "c")]
    conditions = [_condition("Patient/a", "c1"), _condition("Patient/c", "c2")]
    result = _ingest(tmp_path, {"Patient.ndjson": "\n".join(map(json.dumps, patients)) + "\n",
                                "Condition.ndjson": "\n".join(map(json.dumps, conditions)) + "\n"})
    assert result.received == result.ingested + result.quarantined == 5
    rules = sorted(r.rule for r in result.rejections)
    assert rules == ["deid.fhir_shared_mrn", "deid.fhir_shared_mrn", "deid.fhir_unknown_patient"]
    shared = [r for r in result.rejections if r.rule == "deid.fhir_shared_mrn"]
    assert all("MRN-5" not in r.message and "Oakhurst" not in r.message for r in shared)
    assert [r["patient_id"] for r in result.rows["patients"]] == [KEYS.patient("site-a", "MRN-6")]
