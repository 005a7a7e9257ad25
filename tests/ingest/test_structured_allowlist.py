"""Structured fields reach staged tables through an allow-list (issue 17 item 1): coded or numeric content verbatim,
free-text-typed content (a coding's display, a CodeableConcept's text, a sheet's extra columns) never; canaries
planted there are found in no staged parquet and no quarantine record."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from data_contracts.contract import load_contracts
from tasks.deid import Pseudonymizer
from tasks.ingest.accounting import BatchResult
from tasks.ingest.fhir import ingest_fhir
from tasks.ingest.landing import land
from tasks.ingest.omics import ingest_omics
from tasks.ingest.quarantine import Quarantine
from tasks.ingest.staged import write_part

SITE = "site-a"
KEYS = Pseudonymizer(b"k" * 32)
MARK = "CANARY"
MR = {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
V3 = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def patient(pid: str, mrn: str, gender: str = "female") -> dict:
    return {"resourceType": "Patient", "id": pid, "identifier": [{**MR, "value": mrn}], "gender": gender,
            "birthDate": "1970-01-01"}


def encounter(eid: str, klass: dict) -> dict:
    return {"resourceType": "Encounter", "id": eid, "status": "finished", "class": klass,
            "type": [{"coding": [{"system": "http://snomed.info/sct", "code": f"{MARK}TYPECODE",
                                  "display": f"{MARK}TYPEDISPLAY"}], "text": f"{MARK}TYPETEXT"}],
            "subject": {"reference": "Patient/p1"}, "period": {"start": "2021-03-04T08:00:00Z"}}


def condition(cid: str, system: str, code: str) -> dict:
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": "Patient/p1"},
            "category": [{"coding": [{"code": f"{MARK}CATEGORY", "display": f"{MARK}CATDISPLAY"}]}],
            "code": {"coding": [{"system": system, "code": code, "display": f"{MARK}DISPLAY Smith"}],
                     "text": f"{MARK}CONCEPTTEXT"}, "recordedDate": "2021-03-04"}


def staged_and_quarantined_text(result: BatchResult, tmp_path: Path) -> str:
    """Everything the ingest wrote, read back from the parquet files (compressed bytes would hide a canary)."""
    out = tmp_path / "out"
    for table, rows in result.rows.items():
        write_part(out / "staged", table, "x", rows)
    quarantine = Quarantine("run-1")
    quarantine.extend(result.rejections)
    quarantine.write(out / "quarantine")
    frames = [pl.read_parquet(p) for p in sorted(out.rglob("*.parquet"))]
    return json.dumps([[f.columns, f.rows()] for f in frames], default=str) + json.dumps(result.facts, default=str)


def ingest_fhir_files(tmp_path: Path, files: dict[str, list[dict]]) -> BatchResult:
    src = tmp_path / "src"
    src.mkdir()
    for name, lines in files.items():
        (src / name).write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = ingest_fhir(land(src, tmp_path / "landing", "fhir", SITE), tmp_path / "landing", KEYS, SITE)
    assert result.balanced()
    return result


def test_codings_reach_tables_as_codes_only(tmp_path):
    result = ingest_fhir_files(tmp_path, {
        "Patient.ndjson": [patient("p1", "MRN0001"), patient("p2", "MRN0002", gender=f"{MARK}GENDER")],
        "Encounter.ndjson": [
            encounter("e1", {"system": V3, "code": "IMP", "display": f"{MARK}CLASSDISPLAY"}),
            encounter("e2", {"system": V3, "code": f"{MARK}CLASS Smith"}),
            encounter("e3", {"system": "http://example.org/site-classes", "code": "WARD7"}),
            encounter("e4", {"code": "EMER"})],
        "Condition.ndjson": [condition("c1", ICD, "J18.9"), condition("c2", ICD, f"{MARK} Smith"),
                             condition("c3", "http://example.org/local", "I50.9")]})
    assert not result.rejections and result.ingested == 9
    text = staged_and_quarantined_text(result, tmp_path)
    assert MARK not in text and MARK.lower() not in text.lower()
    classes = {r["encounter_id"]: r["class"] for r in result.rows["encounters"]}
    ids = {e: KEYS.resource_id(SITE, "Encounter", e) for e in ("e1", "e2", "e3", "e4")}
    assert {e: classes[i] for e, i in ids.items()} == {"e1": "IMP", "e2": None, "e3": None, "e4": "EMER"}
    allowed = set(load_contracts()["encounters"].expectation("encounters.class_known").args["values"])
    assert set(classes.values()) - {None} <= allowed
    conditions = {r["condition_id"]: r for r in result.rows["conditions"]}
    c1, c2, c3 = (conditions[KEYS.resource_id(SITE, "Condition", c)] for c in ("c1", "c2", "c3"))
    # the display is the code system's (labels.yaml), not the record's; a code that is not a code is null
    assert (c1["system"], c1["code"], c1["display"]) == (ICD, "J18.9", "Pneumonia, unspecified organism")
    # any code system that is a URI is kept with its code (issue 18: open vocabularies); its display is not known
    assert (c2["code"], c2["display"], c3["system"], c3["code"], c3["display"]) == (
        None, None, "http://example.org/local", "I50.9", None)
    assert {r["sex"] for r in result.rows["patients"]} == {"female", None}


def test_omics_sheet_extra_columns_and_mrn_like_sample_ids_stay_out(tmp_path):
    src = tmp_path / "omics"
    src.mkdir()
    # the lab uses MRNs as sample ids, adds its own columns, and types free text into specimen and assay
    (src / "sample_sheet.tsv").write_text(
        "sample_id\tmrn\tcollection_date\tspecimen\tassay\tpatient_name\tcomment\n"
        f"MRN0001\tMRN0001\t2021-03-01\tWhole  Blood\tRNA-seq (log2 TPM)\t{MARK}NAME1\t{MARK}COMMENT\n"
        f"MRN0002\tMRN0002\t2021-03-02\t{MARK}SPECIMEN\t{MARK}ASSAY Smith\t{MARK}NAME2\tcall 555-0100\n"
        f"MRN0003\tMRN0003\t2021-03-03\tplasma\tmicroarray\t{MARK}NAME3\t\n")
    # a matrix with metadata columns beside the genes: an MRN as a number, an age, a name
    (src / "expression.tsv").write_text(
        "sample_id\tGENE1\tGENE2\tmrn\tpatient_name\tage\n"
        f"MRN0001\t1.5\t2.5\t12345678\t{MARK}NAME1\t91\n"
        f"MRN0002\t1.0\t#N/A\t12345679\t{MARK}NAME2\t40\n"
        f"MRN0003\tx\t2.0\t12345670\t{MARK}NAME3\t50\n"
        f"MRN0004\t1.0\t2.0\t12345671\t{MARK}NAME4\t60\n")
    landing = tmp_path / "landing"
    result = ingest_omics(land(src, landing, "omics", SITE), landing, KEYS, SITE, {"MRN0001", "MRN0002", "MRN0003"})
    assert result.balanced() and result.ingested == 1
    assert sorted((r.rule, r.location) for r in result.rejections) == [
        ("omics.sample_sheet", "row 4"), ("omics.value", "row 2"), ("omics.value", "row 3")]
    (row,) = result.rows["omics"]
    assert (row["specimen"], row["assay"]) == ("whole blood", "RNA-seq (log2 TPM)")  # the contract's spelling
    assert [f["feature"] for f in result.rows["omics_features"]] == ["GENE1", "GENE2"]
    assert result.facts["omics_identifying_columns_dropped"] == 3
    text = staged_and_quarantined_text(result, tmp_path)
    for secret in (MARK, "MRN000", "1234567", "555-0100", "patient_name"):
        assert secret not in text, secret
    sheet = ingest_omics(land(src, tmp_path / "l2", "omics", SITE), tmp_path / "l2", KEYS, SITE, None)
    assert {(r["specimen"], r["assay"]) for r in sheet.rows["omics"]} == {("whole blood", "RNA-seq (log2 TPM)")}
    assert MARK not in json.dumps(sheet.rows, default=str)
