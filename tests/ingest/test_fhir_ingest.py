"""FHIR ingest: every line accounted for, each injected defect under its rule, nothing identifying crosses."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from tasks.deid import Pseudonymizer
from tasks.ingest.fhir import ingest_fhir
from tasks.ingest.landing import land, object_uri, sha256_file
from tasks.synth.generate import SynthConfig, generate

KEYS = Pseudonymizer(b"k" * 32)
RULE_OF = {"invalid_json": "fhir.json", "duplicate_resource": "fhir.duplicate", "wrong_unit": "labs.unit",
           "impossible_value": "labs.plausible", "missing_patient_reference": "ref.patient"}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("fhir") / "cohort"
    generate(out, SynthConfig(patients=40, sites=1, seed=21, corrupt_rate=0.12, cxr_size=32, ct_shape=(2, 16, 16)))
    return out


@pytest.fixture(scope="module")
def ingested(cohort, tmp_path_factory):
    landing = tmp_path_factory.mktemp("landing")
    extract = land(cohort / "site-a" / "fhir", landing, "fhir", "site-a")
    return extract, ingest_fhir(extract, landing, KEYS, "site-a")


def test_every_line_is_accounted_for(cohort, ingested):
    _, result = ingested
    lines = sum(len(p.read_text().splitlines()) for p in (cohort / "site-a" / "fhir").glob("*.ndjson"))
    assert result.received == lines
    assert result.received == result.ingested + result.quarantined
    assert result.facts["manifest_mismatches"] == []


def test_each_injected_defect_lands_under_its_rule(cohort, ingested):
    _, result = ingested
    got = {(r.sha256, r.location): r.rule for r in result.rejections}
    reported = [json.loads(x) for x in (cohort / "truth" / "corruptions.jsonl").read_text().splitlines()]
    fhir = [r for r in reported if r["modality"] == "fhir"]
    assert {r["kind"] for r in fhir} == set(RULE_OF)
    for r in fhir:
        key = (sha256_file(cohort / r["file"]), f"line {r['line']}")
        assert got.get(key) == RULE_OF[r["kind"]], r
    # anything else rejected is a resource whose Patient line was itself broken: a cascade, under ref.patient
    injected = {(sha256_file(cohort / r["file"]), f"line {r['line']}") for r in fhir}
    extra = [r for r in result.rejections if (r.sha256, r.location) not in injected]
    assert all(r.rule == "ref.patient" for r in extra)
    broken_patients = [r for r in fhir if r["file"].endswith("Patient.ndjson") and r["kind"] == "invalid_json"]
    assert bool(extra) == bool(broken_patients)


def test_no_phi_crosses(cohort, ingested):
    _, result = ingested
    staged = json.dumps(result.rows) + json.dumps([r.message + r.location for r in result.rejections])
    staged += result.deid.to_json()
    canaries = set()
    for line in (cohort / "site-a" / "fhir" / "Patient.ndjson").read_text().splitlines():
        try:
            p = json.loads(line)
        except json.JSONDecodeError:
            continue
        canaries |= {p["name"][0]["family"], p["name"][0]["text"], p["telecom"][0]["value"], p["id"],
                     p["address"][0]["line"][0], p["contact"][0]["name"]["text"]}
        canaries |= {i["value"] for i in p["identifier"]}
    assert canaries and not [c for c in canaries if c in staged]
    assert "[NAME]" in json.dumps(result.rows["notes"])  # scrubbed, not dropped


def test_units_are_canonical_and_dates_shifted_by_the_patient_offset(cohort, ingested):
    _, result = ingested
    labs = pl.DataFrame(result.rows["labs"])
    assert labs.group_by("loinc").agg(pl.col("unit").n_unique())["unit"].max() == 1
    truth = pl.read_csv(cohort / "truth" / "patients.tsv", separator="\t")
    patient = truth.row(0, named=True)
    pid = KEYS.patient("site-a", patient["mrn"])
    original = [json.loads(x) for x in (cohort / "site-a" / "fhir" / "Encounter.ndjson").read_text().splitlines()
                if patient["fhir_id"] in x][0]
    staged = [e for e in result.rows["encounters"] if e["patient_id"] == pid and e["class"] == "IMP"][0]
    shift = timedelta(days=KEYS.date_offset_days(pid))
    start = datetime.fromisoformat(original["period"]["start"].replace("Z", "+00:00"))
    assert datetime.fromisoformat(staged["start"].replace("Z", "+00:00")) == start + shift


def test_manifest_mismatch_and_deleted_entries(cohort, tmp_path):
    src = tmp_path / "fhir"
    src.mkdir()
    for f in (cohort / "site-a" / "fhir").iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    manifest = json.loads((src / "manifest.json").read_text())
    manifest["output"][0]["count"] += 5  # the server says more than it delivered
    first = json.loads((src / "Condition.ndjson").read_text().splitlines()[0])
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"request": {"method": "DELETE", "url": f"Condition/{first['id']}"}}]}
    (src / "deleted.ndjson").write_text(json.dumps(bundle) + "\n")
    manifest["deleted"] = [{"type": "Bundle", "url": "deleted.ndjson"}]
    (src / "manifest.json").write_text(json.dumps(manifest))
    extract = land(src, tmp_path / "landing", "fhir", "site-a")
    result = ingest_fhir(extract, tmp_path / "landing", KEYS, "site-a")
    listed = next(f for f in extract.files if f.rel_path == manifest["output"][0]["url"])
    assert result.facts["manifest_mismatches"] == [object_uri(tmp_path / "landing", listed.sha256)]  # no file name
    assert result.received == result.ingested + result.quarantined
    assert [r.rule for r in result.rejections if r.rule == "fhir.deleted"] == ["fhir.deleted"]
    assert result.rows["deletions"][0]["resource_id"] == KEYS.resource_id("site-a", "Condition", first["id"])


def test_notes_keep_their_clinical_content(ingested):
    _, result = ingested
    texts = [n["text"] for n in result.rows["notes"] if n["kind"] == "radiology_report"]
    assert texts and all("IMPRESSION" in t for t in texts)
    assert all(isinstance(base64.b64encode(t.encode()), bytes) for t in texts)


def test_same_extract_same_rows(cohort, ingested, tmp_path):
    extract, result = ingested
    again = ingest_fhir(land(cohort / "site-a" / "fhir", tmp_path, "fhir", "site-a"), tmp_path, KEYS, "site-a")
    assert again.rows == result.rows
    assert Path  # keep the import used for type hints in helpers


def test_the_scrubber_knows_everyone_the_extract_names(tmp_path, monkeypatch):
    """Issue 17 item 4: each patient's notes are scrubbed knowing every other person of the extract (other patients,
    their relatives, related persons) and its staff, from one extract-wide tuple shared by every patient."""
    import tasks.ingest.fhir as fhir_ingest

    seen = {}

    def spy(resource, *args, **kwargs):
        seen[resource["id"]] = kwargs["known"]
        return deidentify(resource, *args, **kwargs)

    deidentify = fhir_ingest.deidentify_resource
    monkeypatch.setattr(fhir_ingest, "deidentify_resource", spy)
    mr = {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}
    lines = {
        "Patient.ndjson": [
            {"resourceType": "Patient", "id": "p1", "identifier": [{**mr, "value": "M1"}],
             "name": [{"family": "Alphafam", "given": ["Alphagiven"]}],
             "contact": [{"name": {"family": "Kinfam", "given": ["Kingiven"]}}]},
            {"resourceType": "Patient", "id": "p2", "identifier": [{**mr, "value": "M2"}],
             "name": [{"text": "Betagiven Betafam"}]}],
        "RelatedPerson.ndjson": [{"resourceType": "RelatedPerson", "id": "rp1", "patient": {"reference": "Patient/p1"},
                                  "name": [{"family": "Relfam", "given": ["Relgiven"]}]}],
        "Practitioner.ndjson": [{"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "Docfam"}]}],
        "Encounter.ndjson": [{"resourceType": "Encounter", "id": "e1", "status": "finished", "class": {"code": "AMB"},
                              "subject": {"reference": "Patient/p2"},
                              "participant": [{"individual": {"display": "Dr Nurse Shown"}}]}]}
    src = tmp_path / "src"
    src.mkdir()
    for name, body in lines.items():
        (src / name).write_text("".join(json.dumps(x) + "\n" for x in body))
    result = ingest_fhir(land(src, tmp_path / "landing", "fhir", "site-a"), tmp_path / "landing", KEYS, "site-a")
    assert result.balanced() and result.ingested == 3
    p1, p2, e1 = seen["p1"], seen["p2"], seen["e1"]
    assert {"Alphagiven", "Kinfam", "Betagiven Betafam", "Relfam", "Relgiven"} <= set(p1.other_names)
    assert set(p2.patient_names) == {"Betagiven Betafam"} and "Alphafam" in p2.other_names
    assert {"Docfam", "Dr Nurse Shown"} <= set(p1.staff_names)
    assert p1.other_names is p2.other_names is e1.other_names  # one tuple per extract, not a copy per patient
    assert p1.staff_names is p2.staff_names
