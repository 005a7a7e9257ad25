"""Patient-referencing clinical resources (medications, procedures, allergies, immunisations, ...) reach the typed
`events` table: de-identified by the walker (ids keyed, dates shifted by the patient's offset), coded only by their
system's grammar, never carrying the record's free text; every line accounted for per type; the contract quarantines
an event whose patient is unknown. Tiny extracts written here, real ingest, real contracts."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from data_contracts.contract import load_contracts
from tasks.deid import Pseudonymizer
from tasks.deid.dates import shift_fhir
from tasks.ingest.fhir import ingest_fhir
from tasks.ingest.fhir_events import EVENT_TYPES, SYSTEM_GRAMMAR, known_systems
from tasks.ingest.landing import land
from tasks.ingest.staged import read_table, schema_of, write_part
from tasks.validation.contracts import validate_tables

SITE = "site-a"
KEYS = Pseudonymizer(b"k" * 32)
MRN = "CANARYMRN77"
MR = {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CANARIES = ("CANARYFAMILY", "CANARYGIVEN", MRN, "555-0142", "CANARYNOTE", "CANARYDISPLAY", "CANARYTEXT",
            "CANARYINSTRUCTION", "Dr CANARYDOC")
PATIENT = {"resourceType": "Patient", "id": "p1", "identifier": [{**MR, "value": MRN}], "gender": "female",
           "birthDate": "1960-05-01", "name": [{"family": "CANARYFAMILY", "given": ["CANARYGIVEN"]}],
           "telecom": [{"system": "phone", "value": "555-0142"}]}
ENCOUNTER = {"resourceType": "Encounter", "id": "e1", "status": "finished", "subject": {"reference": "Patient/p1"},
             "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
             "period": {"start": "2020-03-01T09:00:00Z"}}
NOTE = [{"text": "CANARYNOTE for CANARYFAMILY, MRN CANARYMRN77, call 555-0142"}]
MED_REQUEST = {  # the shape of the R4 example medrx0302: a contained Medication, a dose
    "resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
    "contained": [{"resourceType": "Medication", "id": "med1", "code": {"coding": [
        {"system": RXNORM, "code": "197361", "display": "CANARYDISPLAY"}], "text": "CANARYTEXT"}}],
    "medicationReference": {"reference": "#med1"}, "subject": {"reference": "Patient/p1", "display": "CANARYFAMILY"},
    "encounter": {"reference": "Encounter/e1"}, "authoredOn": "2020-03-01",
    "requester": {"reference": "Practitioner/d1", "display": "Dr CANARYDOC"}, "note": NOTE,
    "dosageInstruction": [{"text": "CANARYINSTRUCTION", "patientInstruction": "CANARYINSTRUCTION call 555-0142",
                           "doseAndRate": [{"doseQuantity": {"value": 5, "unit": "mg"}}]}]}
IMMUNIZATION = {"resourceType": "Immunization", "id": "i1", "status": "completed",
                "patient": {"reference": "Patient/p1"},
                "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140",
                                            "display": "CANARYDISPLAY"}], "text": "CANARYTEXT"},
                "occurrenceDateTime": "2020-10-01T10:00:00+01:00", "doseQuantity": {"value": 0.5, "unit": "mL"},
                "note": NOTE}
PROCEDURE = {"resourceType": "Procedure", "id": "pr1", "status": "completed", "subject": {"reference": "Patient/p1"},
             "code": {"coding": [{"system": "http://snomed.info/sct", "code": "80146002"}], "text": "CANARYTEXT"},
             "performedPeriod": {"start": "2020-04-02", "end": "2020-04-03"}, "note": NOTE,
             "performer": [{"actor": {"reference": "Practitioner/d1", "display": "Dr CANARYDOC"}}]}
ALLERGY = {"resourceType": "AllergyIntolerance", "id": "a1", "patient": {"reference": "Patient/p1"},
           "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                                          "code": "active"}]},
           "code": {"coding": [{"system": RXNORM, "code": "aspirin CANARYTEXT"}]},  # not RxNorm's grammar: no code
           "recordedDate": "2019-01-15", "note": NOTE}
DISPENSE = {"resourceType": "MedicationDispense", "id": "d1", "status": "completed",
            "medicationCodeableConcept": {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.69", "code": "12345"}]},
            "subject": {"reference": "Patient/p1"}, "whenHandedOver": "2020-03-02T12:00:00Z",
            "quantity": {"value": 30}}
ORPHAN = {**MED_REQUEST, "id": "m9", "subject": {"reference": "Patient/nobody"}}


def write(folder: Path, files: dict[str, list]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        (folder / name).write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder


EXTRACT = {"Patient.ndjson": [PATIENT], "Encounter.ndjson": [ENCOUNTER],
           "MedicationRequest.ndjson": [MED_REQUEST, ORPHAN, {**MED_REQUEST, "id": "m2", "intent": None}],
           "Immunization.ndjson": [IMMUNIZATION], "Procedure.ndjson": [PROCEDURE],
           "AllergyIntolerance.ndjson": [ALLERGY], "MedicationDispense.ndjson": [DISPENSE],
           "Organization.ndjson": [{"resourceType": "Organization", "id": "o1", "name": "CANARY Hospital"}]}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("events")
    src = write(root / "src", EXTRACT)
    extract = land(src, root / "landing", "fhir", SITE)
    result = ingest_fhir(extract, root / "landing", KEYS, SITE)
    staged = root / "staged"
    for table, rows in result.rows.items():
        write_part(staged, table, extract.extract_id, rows)
    return result, staged


def test_every_line_is_accounted_for_per_resource_type(ingested):
    result, _ = ingested
    assert result.received == result.ingested + result.quarantined == 10
    assert result.facts["resource_types"] == {
        "AllergyIntolerance": {"received": 1, "ingested": 1, "quarantined": 0},
        "Encounter": {"received": 1, "ingested": 1, "quarantined": 0},
        "Immunization": {"received": 1, "ingested": 1, "quarantined": 0},
        "MedicationDispense": {"received": 1, "ingested": 1, "quarantined": 0},
        "MedicationRequest": {"received": 3, "ingested": 1, "quarantined": 2},
        "Organization": {"received": 1, "ingested": 0, "quarantined": 1},
        "Patient": {"received": 1, "ingested": 1, "quarantined": 0},
        "Procedure": {"received": 1, "ingested": 1, "quarantined": 0}}
    rules = sorted((r.rule, r.location, r.message.split()[0]) for r in result.rejections)
    assert rules == [("fhir.structure", "line 3", "MedicationRequest"),
                     ("fhir.unsupported_type", "line 1", "Organization"),
                     ("ref.patient", "line 2", "MedicationRequest.subject")]


def test_event_rows_are_pseudonymised_shifted_and_coded(ingested):
    result, staged = ingested
    events = read_table(staged, "events")
    assert events.columns == list(schema_of("events")) and events.height == 5
    rows = {r["event_id"]: r for r in events.to_dicts()}
    patient = KEYS.patient(SITE, MRN)
    offset = KEYS.date_offset_days(patient)

    def row(rtype: str, rid: str) -> dict:
        return rows[f"{rtype}/{KEYS.resource_id(SITE, rtype, rid)}"]

    med = row("MedicationRequest", "m1")
    assert med == {"event_id": med["event_id"], "patient_id": patient, "site": SITE,
                   "encounter_id": KEYS.resource_id(SITE, "Encounter", "e1"), "resource_type": "MedicationRequest",
                   "time": shift_fhir("2020-03-01", offset), "status": "active", "system": RXNORM, "code": "197361",
                   "display": None, "value": 5.0, "source_sha256": med["source_sha256"]}
    assert med["time"] != "2020-03-01"
    imm = row("Immunization", "i1")  # the patient is `patient`, not `subject`
    assert (imm["patient_id"], imm["system"], imm["code"], imm["value"]) == (
        patient, "http://hl7.org/fhir/sid/cvx", "140", 0.5)
    assert imm["time"] == shift_fhir("2020-10-01T10:00:00+01:00", offset)
    proc = row("Procedure", "pr1")
    assert (proc["time"], proc["code"], proc["value"]) == (shift_fhir("2020-04-02", offset), "80146002", None)
    allergy = row("AllergyIntolerance", "a1")
    assert (allergy["status"], allergy["code"], allergy["system"]) == ("active", None, None)
    assert allergy["time"] == shift_fhir("2019-01-15", offset)
    dispense = row("MedicationDispense", "d1")  # an unknown system: the code by the generic grammar, no system
    assert (dispense["system"], dispense["code"], dispense["value"]) == (None, "12345", 30.0)
    assert dispense["time"] == shift_fhir("2020-03-02T12:00:00Z", offset)


def test_no_canary_reaches_a_table_a_record_or_the_report(ingested):
    result, staged = ingested
    said = json.dumps(result.rows) + result.deid.to_json() + json.dumps(result.facts)
    said += json.dumps([[r.location, r.rule, r.message] for r in result.rejections])
    said += b"".join(p.read_bytes() for p in staged.rglob("*.parquet")).decode("latin-1")
    assert not [c for c in CANARIES if c in said]
    assert "CANARY" not in said


def test_validate_quarantines_an_event_naming_an_unknown_patient(ingested):
    _, staged = ingested
    events = read_table(staged, "events")
    ghost = events.head(1).with_columns(pl.lit("P-unknown").alias("patient_id"),
                                        pl.lit("Procedure/ghost").alias("event_id"))
    tables = {t: read_table(staged, t) for t in ("patients", "encounters")}
    tables["events"] = pl.concat([events, ghost])
    report = validate_tables(tables, gx=False)
    assert not report.blocked
    assert report.tables["events"].quarantine_reasons == {"events.patient_known": 1}
    assert report.clean["events"].height == events.height
    assert "Procedure/ghost" not in report.clean["events"]["event_id"].to_list()


def test_a_withdrawn_event_is_dropped_from_the_staged_table(ingested, tmp_path):
    _, staged = ingested
    gone = {"resource_type": "Procedure", "resource_id": KEYS.resource_id(SITE, "Procedure", "pr1"), "site": SITE}
    copy = tmp_path / "staged"
    for part in staged.rglob("*.parquet"):
        (copy / part.parent.name).mkdir(parents=True, exist_ok=True)
        (copy / part.parent.name / part.name).write_bytes(part.read_bytes())
    write_part(copy, "deletions", "later", [gone])
    ids = read_table(copy, "events")["event_id"].to_list()
    assert len(ids) == 4 and f"Procedure/{gone['resource_id']}" not in ids


def test_the_contract_and_the_row_function_declare_the_same_types_and_systems():
    contract = load_contracts()["events"]
    assert set(contract.expectation("events.resource_type_known").args["values"]) == set(EVENT_TYPES)
    assert known_systems() == set(SYSTEM_GRAMMAR)
    assert set(contract.columns) - {"split"} == set(schema_of("events"))
