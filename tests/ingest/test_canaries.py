"""PHI canaries through the whole ingest: unique markers planted wherever PHI hides in real extracts (names, IDs,
dates, UIDs, sequences nested three deep, private tags, free-text descriptions, FHIR narrative and extensions,
note and report text, the free text of events: notes, displays, instructions) must be found nowhere afterwards:
staged and curated tables, image shards, quarantine records, de-identification reports, run summaries or logs."""

from __future__ import annotations

import base64
import json
import logging

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from flows.ingest import ingest_dicom, ingest_fhir_flow
from flows.validate import validate
from tasks.synth.generate import SynthConfig, generate
from tasks.workspace import init_workspace

MARK = "CANARY"
DATE_MARK = "19010203"
UID_MARK = "1.2.826.0.1.3680043.10.999.424242"


def _plant_dicom(path):
    ds = pydicom.dcmread(path)
    ds.PatientName = f"{MARK}FAMILY^{MARK}GIVEN"
    ds.OtherPatientIDs = f"{MARK}OTHERID"
    ds.InstitutionName = f"{MARK}HOSPITAL"
    ds.StudyDescription = f"chest for {MARK}FAMILY"
    ds.PatientBirthDate = DATE_MARK
    inner = Dataset()
    inner.PersonName = f"{MARK}NESTED^PERSON"
    inner.ObservationDateTime = f"{DATE_MARK}101500"
    middle = Dataset()
    middle.ContentSequence = Sequence([inner])
    middle.ReferencedSOPInstanceUID = UID_MARK
    outer = Dataset()
    outer.ContentSequence = Sequence([middle])
    ds.ContentSequence = Sequence([outer])
    block = ds.private_block(0x0013, "HOSPITAL PRIVATE", create=True)
    block.add_new(0x01, "LO", f"{MARK}PRIVATE")
    ds.save_as(path)


def _plant_fhir(folder):
    patients = [json.loads(x) for x in (folder / "Patient.ndjson").read_text().splitlines()]
    p = patients[0]
    p["name"][0]["family"] = f"{MARK}FAMILY"
    p["text"]["div"] = f'<div xmlns="http://www.w3.org/1999/xhtml">{MARK}NARRATIVE</div>'
    p["extension"].append({"url": "http://example.org/x", "valueString": f"{MARK}EXTENSION"})
    (folder / "Patient.ndjson").write_text("\n".join(json.dumps(x) for x in patients) + "\n")
    docs = [json.loads(x) for x in (folder / "DocumentReference.ndjson").read_text().splitlines()]
    for d in docs:
        if d["subject"]["reference"] == f"Patient/{p['id']}":
            note = f"Mr. {MARK}FAMILY seen on 01/02/1901, phone (555) 555-0199, e-mail {MARK.lower()}@mail.org."
            d["content"][0]["attachment"]["data"] = base64.b64encode(note.encode()).decode()
    (folder / "DocumentReference.ndjson").write_text("\n".join(json.dumps(x) for x in docs) + "\n")
    _plant_events(folder, p)


def _plant_events(folder, p):
    """Events (tasks/ingest/fhir_events.py) with canaries in every free-text element they have: the name, MRN and
    phone of the patient in a note, a coding's display, a concept's text, a dosage's patientInstruction."""
    mrn = next(i["value"] for i in p["identifier"])
    free = f"{MARK}FAMILY MRN {mrn} phone (555) 555-0199"
    concept = {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "197361",
                           "display": f"{MARK}DISPLAY"}], "text": f"{MARK}TEXT {free}"}
    med = {"resourceType": "MedicationRequest", "id": "canary-m1", "status": "active", "intent": "order",
           "medicationCodeableConcept": concept, "subject": {"reference": f"Patient/{p['id']}", "display": free},
           "authoredOn": "2020-01-02", "note": [{"text": free, "time": "1901-02-03"}],
           "requester": {"reference": "Practitioner/x", "display": f"Dr {MARK}DOC"},
           "dosageInstruction": [{"text": free, "patientInstruction": free,
                                  "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}]}]}
    imm = {"resourceType": "Immunization", "id": "canary-i1", "status": "completed", "patient": med["subject"],
           "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140",
                                       "display": f"{MARK}DISPLAY"}], "text": free},
           "occurrenceString": free, "recorded": "2020-01-02", "note": [{"text": free, "time": "1901-02-03"}]}
    (folder / "MedicationRequest.ndjson").write_text(json.dumps(med) + "\n")
    (folder / "Immunization.ndjson").write_text(json.dumps(imm) + "\n")


def test_no_canary_survives_ingest(tmp_path, prefect_api, pseudonym_key, caplog):
    caplog.set_level(logging.DEBUG)
    cohort = tmp_path / "cohort"
    generate(cohort, SynthConfig(patients=8, sites=1, seed=15, missing_rate=0.0, cxr_size=32, ct_shape=(2, 16, 16)))
    site = cohort / "site-a"
    planted = sorted(site.joinpath("dicom").rglob("SE01/IM0001.dcm"))[:3]
    for path in planted:
        _plant_dicom(path)
    _plant_fhir(site / "fhir")
    ws = init_workspace(tmp_path / "ws")
    summaries = [ingest_fhir_flow(source=site / "fhir", workspace=ws.root, site="site-a"),
                 ingest_dicom(source=site / "dicom", workspace=ws.root, site="site-a")]
    assert summaries[1]["ingested"] >= len(planted)
    assert summaries[0]["tables"]["events"] == 2  # the planted events were staged, not set aside
    summaries.append(validate(workspace=ws.root))
    assert summaries[2]["curated"]["events"] == 2
    out = b"".join(p.read_bytes() for p in (ws.root / "data").rglob("*") if p.is_file() and "landing" not in p.parts)
    out += json.dumps(summaries).encode() + caplog.text.encode()
    out = out.replace(str(tmp_path).encode(), b"")  # the test's own folder is named after it (no_canary_...)
    for marker in (MARK, MARK.lower(), DATE_MARK, "1901-02-03", UID_MARK, "555-0199"):
        assert marker.encode() not in out, marker
    assert MARK.encode() in b"".join(p.read_bytes() for p in planted)  # the canaries were really there
