"""FHIR R4 de-identification with canaries in names, identifiers, narrative, extensions, attachments, conclusions."""

from __future__ import annotations

import base64
import copy
import json
import logging
from dataclasses import replace
from datetime import date, timedelta

import pytest

from data_contracts.deid import default_config
from tasks.deid import DeidError, deidentify_resource, known_identifiers, patient_index
from tasks.deid.fhir_walk import IDENTIFIER_SYSTEM, PATIENT_SYSTEM

SITE = "site01"
MRN = "CANARYMRN1"
NOTE = ("CANARYGIVEN Canaryfamily was seen on 03/04/2021 by Dr. Canarystaff. Call (201) 555-0134. "
        "MRN CANARYMRN1, SSN 123-45-6789. Follow-up 2021-03-07. DOB 02/03/1931. Wife Canarycontact called.")
MR = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


PATIENT = {
    "resourceType": "Patient", "id": "CANARYPATID1",
    "meta": {"versionId": "7", "lastUpdated": "2021-03-04T10:00:00Z", "source": "https://CANARYHOST/fhir"},
    "text": {"status": "generated", "div": "<div>CANARYGIVEN Canaryfamily, born 1931-02-03</div>"},
    "extension": [{"url": "http://example.org/CANARYEXT", "valueString": "CANARYEXTVALUE"}],
    "identifier": [{"type": MR, "system": "urn:oid:CANARYSYSTEM", "value": MRN},
                   {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "123-45-6789"}],
    "name": [{"family": "Canaryfamily", "given": ["CANARYGIVEN"], "text": "CANARYGIVEN Canaryfamily"}],
    "telecom": [{"system": "phone", "value": "(201) 555-0134"}, {"system": "email", "value": "canary@CANARY.org"}],
    "gender": "female", "birthDate": "1931-02-03",
    "address": [{"line": ["12 CANARYSTREET Ave"], "city": "CANARYCITY", "postalCode": "07030"}],
    "photo": [{"contentType": "image/jpeg", "data": b64("CANARYPHOTO")}],
    "contact": [{"name": {"family": "Canarycontact"}}],
    "generalPractitioner": [{"reference": "Practitioner/CANARYPRACID", "display": "Dr CANARYSTAFF"}],
}
ENCOUNTER = {
    "resourceType": "Encounter", "id": "CANARYENCID1", "status": "finished",
    "identifier": [{"system": "urn:visit", "value": "CANARYVISIT1"}],
    "subject": {"reference": "Patient/CANARYPATID1", "display": "CANARYGIVEN Canaryfamily"},
    "period": {"start": "2021-03-04T08:30:00+01:00", "end": "2021-03-07"},
    "participant": [{"individual": {"reference": "Practitioner/CANARYPRACID", "display": "Dr Canarystaff"}}],
    "serviceProvider": {"reference": "Organization/CANARYORG", "display": "CANARY General Hospital"},
}
OBSERVATION = {
    "resourceType": "Observation", "id": "CANARYOBSID1", "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "1988-5", "display": "CRP"}], "text": "CRP"},
    "subject": {"reference": "Patient/CANARYPATID1"}, "encounter": {"reference": "Encounter/CANARYENCID1"},
    "effectiveDateTime": "2021-03-04T09:15:00Z", "issued": "2021-03-04T10:00:00.000Z",
    "valueQuantity": {"value": 12.5, "unit": "mg/L", "system": "http://unitsofmeasure.org", "code": "mg/L"},
    "note": [{"authorString": "CANARYAUTHOR", "time": "2021-03-04", "text": "drawn by Canarystaff"}],
    "performer": [{"reference": "Practitioner/CANARYPRACID", "display": "Canarystaff"}],
}
CONDITION = {
    "resourceType": "Condition", "id": "CANARYCONDID1", "subject": {"reference": "Patient/CANARYPATID1"},
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "233604007", "display": "Pneumonia"}]},
    "onsetDateTime": "2021-03-01", "recordedDate": "2021-03-04", "onsetAge": {"value": 92, "code": "a"},
    "_recordedDate": {"extension": [{"url": "http://example.org/CANARYEXT2", "valueString": "CANARYX"}]},
}
REPORT = {
    "resourceType": "DiagnosticReport", "id": "CANARYDRID1", "status": "final",
    "subject": {"reference": "Patient/CANARYPATID1"}, "effectiveDateTime": "2021-03-04",
    "resultsInterpreter": [{"reference": "Practitioner/CANARYPRACID", "display": "Dr CANARYSTAFF"}],
    "performer": [{"reference": "Organization/CANARYORG", "display": "CANARY Radiology"}],
    "conclusion": "CANARYGIVEN Canaryfamily: pneumonia, compared with March 1, 2021.",
    "presentedForm": [{"contentType": "text/plain; charset=utf-8", "data": b64(NOTE), "hash": "CANARYHASH"}],
}
DOCUMENT = {
    "resourceType": "DocumentReference", "id": "CANARYDOCID1", "status": "current",
    "subject": {"reference": "https://CANARYHOST/fhir/Patient/CANARYPATID1"}, "date": "2021-03-04T12:00:00Z",
    "author": [{"reference": "Practitioner/CANARYPRACID", "display": "Canarystaff"}],
    "content": [{"attachment": {"contentType": "text/plain", "data": b64(NOTE), "title": "Note on CANARYGIVEN",
                                "url": "https://CANARYHOST/doc/1", "creation": "2021-03-04"}},
                {"attachment": {"contentType": "application/pdf", "data": b64("%PDF CANARYPDF")}}],
    "context": {"period": {"start": "2021-03-04"}, "encounter": [{"reference": "Encounter/CANARYENCID1"}]},
}
RESOURCES = [PATIENT, ENCOUNTER, OBSERVATION, CONDITION, REPORT, DOCUMENT]


@pytest.fixture
def index():
    return patient_index([PATIENT], SITE)


@pytest.fixture
def known():
    return known_identifiers(PATIENT, staff_names=["Canarystaff"])


def run(resource, keys, index, known):
    return deidentify_resource(resource, keys, site=SITE, patients=index, known=known, age_reference=date(2022, 1, 1))


def test_no_canary_in_any_output(keys, index, known, caplog):
    caplog.set_level(logging.DEBUG)
    outputs = [run(r, keys, index, known) for r in RESOURCES]
    text = json.dumps([o.resource for o in outputs])
    decoded = " ".join(base64.b64decode(a["data"]).decode() for o in outputs
                       for a in _attachments(o.resource))
    for haystack in (text, decoded, caplog.text, repr(known)):
        assert "CANARY" not in haystack.upper()
        assert "555-0134" not in haystack and "123-45-6789" not in haystack and "2021-03-04" not in haystack
    assert "1931" not in text + decoded  # over 89: birthDate becomes a year that reads 90, notes say [DATE]


def _attachments(resource: dict):
    yield from resource.get("presentedForm", [])
    yield from (c["attachment"] for c in resource.get("content", []) if "data" in c["attachment"])


def test_patient_joins_dicom_pseudonym(keys, index, known):
    out = run(PATIENT, keys, index, known).resource
    pseudonym = keys.patient(SITE, MRN)
    assert out["id"] == pseudonym
    assert out["identifier"] == [{"system": PATIENT_SYSTEM, "value": pseudonym, "type": MR}]
    practitioner = keys.resource_id(SITE, "Practitioner", "CANARYPRACID")
    assert out["generalPractitioner"] == [{"reference": f"Practitioner/{practitioner}"}]
    assert set(out) == {"resourceType", "id", "identifier", "gender", "birthDate", "generalPractitioner"}
    shifted_reference = date(2022, 1, 1) + timedelta(days=keys.date_offset_days(pseudonym))
    assert out["birthDate"] == str(shifted_reference.year - 90)  # 90 at the (shifted) reference date


def test_references_and_ids_are_consistent(keys, index, known):
    enc = run(ENCOUNTER, keys, index, known).resource
    obs = run(OBSERVATION, keys, index, known).resource
    doc = run(DOCUMENT, keys, index, known).resource
    assert obs["encounter"]["reference"] == f"Encounter/{enc['id']}"
    assert doc["context"]["encounter"][0]["reference"] == f"Encounter/{enc['id']}"
    assert obs["subject"] == doc["subject"] == {"reference": f"Patient/{keys.patient(SITE, MRN)}"}
    assert enc["identifier"][0]["system"] == IDENTIFIER_SYSTEM
    assert "display" not in enc["participant"][0]["individual"] and "display" not in obs["performer"][0]
    assert obs["code"]["coding"][0]["display"] == "CRP" and obs["valueQuantity"]["value"] == 12.5


def test_dates_shift_with_patient_offset_keeping_format(keys, index, known):
    result = run(ENCOUNTER, keys, index, known)
    offset = keys.date_offset_days(keys.patient(SITE, MRN))
    assert result.date_offset_days == offset
    start, end = result.resource["period"]["start"], result.resource["period"]["end"]
    assert start.endswith("T08:30:00+01:00") and len(end) == 10
    assert (date.fromisoformat(end) - date.fromisoformat(start[:10])).days == 3
    assert (date(2021, 3, 4) - date.fromisoformat(start[:10])).days == -offset
    issued = run(OBSERVATION, keys, index, known).resource["issued"]
    assert issued.endswith("T10:00:00.000Z")


def test_free_text_and_attachments_scrubbed(keys, index, known):
    out = run(REPORT, keys, index, known).resource
    assert out["conclusion"].startswith("[NAME]: pneumonia, compared with ")
    note = base64.b64decode(out["presentedForm"][0]["data"]).decode()
    assert "[NAME]" in note and "[PHONE]" in note and "[MRN]" in note and "[SSN]" in note
    assert "hash" not in out["presentedForm"][0]
    doc = run(DOCUMENT, keys, index, known).resource
    assert "data" not in doc["content"][1]["attachment"]  # a PDF cannot be scrubbed: dropped
    assert "url" not in doc["content"][0]["attachment"]


def test_age_and_extensions(keys, index, known):
    out = run(CONDITION, keys, index, known)
    assert out.resource["onsetAge"]["value"] == 90
    assert "_recordedDate" not in out.resource and out.actions["X"] >= 1


def test_unknown_patient_refused_without_value(keys, known):
    with pytest.raises(DeidError) as info:
        deidentify_resource(OBSERVATION, keys, site=SITE, patients={}, known=known)
    assert info.value.rule == "fhir_unknown_patient" and "CANARY" not in str(info.value)


def test_input_not_modified_and_generic_resource(keys, index, known):
    before = copy.deepcopy(OBSERVATION)
    run(OBSERVATION, keys, index, known)
    assert before == OBSERVATION
    practitioner = {"resourceType": "Practitioner", "id": "CANARYPRACID", "name": [{"family": "Canarystaff"}],
                    "birthDate": "1970-01-01", "CANARYKEY": "x"}
    out = deidentify_resource(practitioner, keys, site=SITE, patients={}, known=known)
    assert "CANARY" not in json.dumps(out.resource) and out.patient_pseudonym is None
    assert out.date_offset_days == keys.site_date_offset_days(SITE)
    assert "Practitioner.<invalid-key>" in out.attributes


def test_safe_listed_extension_kept(keys, index, known):
    url = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex"
    config = replace(default_config(), fhir_extension_safe_list=frozenset({url}))
    patient = {**PATIENT, "extension": [*PATIENT["extension"], {"url": url, "valueCode": "F"}]}
    out = deidentify_resource(patient, keys, site=SITE, patients=index, known=known, config=config).resource
    assert out["extension"] == [{"url": url, "valueCode": "F"}]
