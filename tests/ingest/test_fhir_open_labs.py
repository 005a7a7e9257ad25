"""Open vocabularies (issue 18 item 1): any LOINC-coded Observation is staged, in one canonical UCUM unit per code
(the catalogue's, else the workspace's first), components as rows, typed values; conditions in any code system.
Real FHIR lines in tmp folders, the real ingest, the real UCUM library."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import polars as pl
import pytest

from tasks.deid import Pseudonymizer
from tasks.ingest.fhir import ingest_fhir
from tasks.ingest.landing import land
from tasks.validation.contracts import validate_tables
from tests.contracts.batch import make_batch, set_rows

SITE = "site-a"
KEYS = Pseudonymizer(b"k" * 32)
MR = {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}
UCUM = "http://unitsofmeasure.org"
CANARY = "Zebulon Quartermaine"


def patient(pid: str = "p1", mrn: str = "MRN-0001") -> dict:
    return {"resourceType": "Patient", "id": pid, "identifier": [{**MR, "value": mrn}], "gender": "female",
            "birthDate": "1970-01-01", "name": [{"family": "Quartermaine", "given": ["Zebulon"], "text": CANARY}]}


def loinc(code: str) -> dict:
    return {"coding": [{"system": "http://loinc.org", "code": code, "display": "whatever the site typed"}]}


def qty(value: float, unit: str) -> dict:
    return {"valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}}


def obs(oid: str, code: str | dict, pid: str = "p1", **value) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final", "subject": {"reference": f"Patient/{pid}"},
            "code": loinc(code) if isinstance(code, str) else code, "effectiveDateTime": "2021-03-01T10:00:00Z",
            **value}


def write_extract(folder: Path, observations: list[dict], conditions: list[dict] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    files = {"Patient.ndjson": [patient()], "Observation.ndjson": observations, "Condition.ndjson": list(conditions)}
    for name, lines in files.items():
        if lines:
            (folder / name).write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder


def ingest(src: Path, ws: Path):
    landing = ws / "landing"
    result = ingest_fhir(land(src, landing, "fhir", SITE), landing, KEYS, SITE, state_dir=ws / ".mmfm")
    assert result.received == result.ingested + result.quarantined
    return result


def observation_fates(result, n_observations: int) -> dict[str, str]:
    """Observation line -> rule, and the check that every Observation line is ingested or quarantined once."""
    rules = {r.location: r.rule for r in result.rejections}
    ingested_obs = result.ingested - 1  # the one Patient
    assert ingested_obs + len(rules) == n_observations, (result.ingested, rules)
    return rules


def labs_by_id(result, ids=None) -> dict[str, dict]:
    """Staged lab rows by the source's Observation id (staged ids are pseudonyms: `<pseudonym>/<component>`)."""
    ids = ids or [o["id"] for o in OBSERVATIONS]
    source = {KEYS.resource_id(SITE, "Observation", i): i for i in ids}
    out = {}
    for r in result.rows.get("labs", []):
        head, _, k = r["observation_id"].partition("/")
        parent = r["parent_observation_id"]
        out[source[head] + (f"/{k}" if k else "")] = {**r, "parent_observation_id": source.get(parent, parent)}
    return out


BP = obs("bp1", "85354-9", component=[
    {"code": loinc("8480-6"), **qty(120, "mm[Hg]"), "interpretation": [{"coding": [{"code": "N"}]}]},
    {"code": loinc("8462-4"), **qty(10.666, "kPa"), "referenceRange": [{"low": {"value": 8, "code": "kPa"}}]}])
OBSERVATIONS = [
    obs("glu", "2345-7", **qty(100, "mg/dL"),  # catalogued, canonical mmol/L, molar mass 180.156 g/mol
        referenceRange=[{"low": {"value": 70, "code": "mg/dL"}, "high": {"value": 140, "code": "mg/dL"}}],
        interpretation=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                     "code": "H", "display": "High"}]}]),
    obs("hb", "718-7", **qty(140, "g/L")),  # catalogued, canonical g/dL
    obs("egfr", "33914-3", **qty(72, "mL/min/{1.73_m2}")),  # not catalogued, unit unknown to the catalogue
    obs("na1", "2951-2", **qty(140, "mmol/L")),  # not catalogued: first unit seen becomes canonical
    obs("na2", "2951-2", **qty(138000, "umol/L")),  # ... and a later commensurable one converts to it
    obs("na3", "2951-2", **qty(3.2, "g")),  # not commensurable with mmol/L
    obs("bad-unit", "8867-4", **qty(72, "beats per minute")),  # not UCUM
    BP,
    obs("panel", "58410-2", hasMember=[{"reference": "Observation/hb"}]),  # a panel without a value: no row
    obs("covid", "94500-6", valueCodeableConcept={"coding": [{"system": "http://snomed.info/sct", "code": "260385009",
                                                             "display": f"Negative, told {CANARY}"}],
                                                 "text": CANARY}),
    obs("smoker", "63582-0", valueBoolean=True),
    obs("apgar", "9272-6", valueInteger=9),
    obs("comment", "8251-1", valueString=f"Seen by {CANARY}, patient doing well"),
    obs("local", {"coding": [{"system": "urn:oid:1.2.3.4", "code": "K-17"}]}, **qty(4.1, "mmol/L")),
    obs("ratio", "5902-2", valueRatio={"numerator": {"value": 1}, "denominator": {"value": 2}}),
]


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws")
    return ws, ingest(write_extract(ws / "src", OBSERVATIONS), ws)


def test_every_observation_is_staged_or_quarantined_under_its_rule(staged):
    _, result = staged
    rules = observation_fates(result, len(OBSERVATIONS))
    line = {o["id"]: f"line {n}" for n, o in enumerate(OBSERVATIONS, start=1)}
    assert rules == {line["na3"]: "labs.unit", line["bad-unit"]: "labs.unit", line["local"]: "labs.code",
                     line["ratio"]: "labs.value"}
    messages = " ".join(r.message for r in result.rejections)
    for value in ("beats per minute", "K-17", "urn:oid", "2951-2", "3.2"):  # never a value of the record
        assert value not in messages
    assert "Observation.valueQuantity.code" in messages and "Observation.code" in messages


def test_values_are_converted_to_one_unit_per_code(staged):
    _, result = staged
    labs = labs_by_id(result)
    glu = labs["glu"]
    assert (glu["lab"], glu["unit"], glu["source_unit"], glu["value_type"]) == ("glucose", "mmol/L", "mg/dL",
                                                                               "quantity")
    assert glu["value"] == pytest.approx(5.5507, abs=1e-3)  # 100 mg/dL / 180.156 g/mol
    assert (glu["ref_low"], glu["ref_high"]) == (pytest.approx(3.8855, abs=1e-3), pytest.approx(7.771, abs=1e-3))
    assert glu["interpretation"] == "H"
    assert (labs["hb"]["value"], labs["hb"]["unit"]) == (pytest.approx(14.0), "g/dL")
    assert (labs["egfr"]["value"], labs["egfr"]["unit"], labs["egfr"]["lab"]) == (72.0, "mL/min/{1.73_m2}", None)
    assert [(labs[i]["value"], labs[i]["unit"]) for i in ("na1", "na2")] == [(140.0, "mmol/L"),
                                                                            (pytest.approx(138.0), "mmol/L")]
    frame = pl.DataFrame(result.rows["labs"]).filter(pl.col("value_type") == "quantity")
    assert frame.group_by("loinc").agg(pl.col("unit").n_unique())["unit"].max() == 1


def test_components_are_rows_of_their_own_and_a_panel_without_value_is_not(staged):
    _, result = staged
    labs = labs_by_id(result)
    sys_, dia = labs["bp1/0"], labs["bp1/1"]
    assert (sys_["loinc"], sys_["value"], sys_["unit"], sys_["parent_observation_id"]) == (
        "8480-6", 120.0, "mm[Hg]", "bp1")
    assert (dia["loinc"], dia["unit"], dia["source_unit"]) == ("8462-4", "mm[Hg]", "kPa")
    assert dia["value"] == pytest.approx(80.0, abs=0.01) and dia["ref_low"] == pytest.approx(60.0, abs=0.01)
    assert sys_["interpretation"] == "N" and labs["glu"]["parent_observation_id"] is None
    assert "bp1" not in labs and "panel" not in labs  # ingested (accounted above), no value: no row


def test_typed_values_and_no_free_text_but_the_scrubbed_string(staged):
    _, result = staged
    labs = labs_by_id(result)
    covid = labs["covid"]
    assert (covid["value_type"], covid["value_system"], covid["value_code"], covid.get("value")) == (
        "coded", "http://snomed.info/sct", "260385009", None)
    assert (labs["smoker"]["value_type"], labs["smoker"]["value_boolean"]) == ("boolean", True)
    assert (labs["apgar"]["value_type"], labs["apgar"]["value"], labs["apgar"].get("unit")) == ("integer", 9.0, None)
    comment = labs["comment"]
    assert comment["value_type"] == "text" and "doing well" in comment["value_text"]
    staged_text = json.dumps(result.rows)
    assert "Zebulon" not in staged_text and "Quartermaine" not in staged_text and "Negative, told" not in staged_text


def test_the_workspace_keeps_the_first_unit_of_a_new_code_across_extracts(staged, tmp_path):
    ws, _ = staged
    later = [obs("na9", "2951-2", **qty(0.141, "mol/L")), obs("k1", "2823-3", **qty(4200, "umol/L")),
             obs("k2", "2823-3", **qty(4.4, "mmol/L"))]
    result = ingest(write_extract(tmp_path / "src2", later), ws)
    labs = labs_by_id(result, [o["id"] for o in later])
    assert (labs["na9"]["value"], labs["na9"]["unit"]) == (pytest.approx(141.0), "mmol/L")  # the earlier extract's
    assert [(labs[k]["value"], labs[k]["unit"]) for k in ("k1", "k2")] == [(4200.0, "umol/L"),
                                                                          (pytest.approx(4400.0), "umol/L")]
    with sqlite3.connect(ws / ".mmfm" / "ingest.db") as db:
        units = dict(db.execute("SELECT loinc, unit FROM lab_units").fetchall())
    assert units["2951-2"] == "mmol/L" and units["2823-3"] == "umol/L" and "2345-7" not in units  # catalogued


def test_conditions_keep_any_code_system_and_never_free_text(tmp_path):
    def cond(cid: str, system: str, code: str) -> dict:
        return {"resourceType": "Condition", "id": cid, "subject": {"reference": "Patient/p1"},
                "code": {"coding": [{"system": system, "code": code, "display": CANARY}], "text": CANARY}}

    conditions = [cond("icd9", "http://hl7.org/fhir/sid/icd-9-cm", "428.0"),
                  cond("icd10", "http://hl7.org/fhir/sid/icd-10-cm", "I50.9"),
                  cond("sct", "http://snomed.info/sct", "84114007"),
                  cond("local", "urn:oid:2.16.840.1.113883.6.42", "HF-01"),
                  cond("text-system", "ICD nine", "428.0"),
                  cond("sentence", "https://codes.example.org/dx", "heart failure per Dr X"),
                  cond("bad-icd9", "http://hl7.org/fhir/sid/icd-9-cm", "I50.9")]
    result = ingest(write_extract(tmp_path / "src", [], conditions), tmp_path)
    source = {KEYS.resource_id(SITE, "Condition", c["id"]): c["id"] for c in conditions}
    rows = {source[r["condition_id"]]: (r["system"], r["code"]) for r in result.rows["conditions"]}
    assert rows == {"icd9": ("http://hl7.org/fhir/sid/icd-9-cm", "428.0"),
                    "icd10": ("http://hl7.org/fhir/sid/icd-10-cm", "I50.9"),
                    "sct": ("http://snomed.info/sct", "84114007"),
                    "local": ("urn:oid:2.16.840.1.113883.6.42", "HF-01"),
                    "text-system": (None, None), "sentence": (None, None), "bad-icd9": (None, None)}
    assert CANARY not in json.dumps(result.rows)


def test_contract_by_code_rules_judge_catalogued_codes_only():
    batch = make_batch()
    labs = batch["labs"]
    extra = labs.head(2).with_columns(observation_id=pl.Series(["X-na", "X-na2"]), loinc=pl.lit("2951-2"),
                                      lab=pl.lit(None, pl.String), unit=pl.lit("mmol/L"),
                                      source_unit=pl.lit("umol/L"), value=pl.Series([140.0, -3.0e9]))
    batch["labs"] = pl.concat([set_rows(labs, "observation_id", ["O0-crp"], loinc="not a code"), extra])
    report = validate_tables(batch, gx=False)
    outcome = report.tables["labs"]
    assert outcome.quarantine_reasons == {"labs.loinc_known": 1}  # un-catalogued 2951-2 passes by-code rules
    assert {"X-na", "X-na2"} <= set(report.clean["labs"]["observation_id"])


def test_a_row_without_the_value_its_type_names_is_quarantined():
    batch = make_batch()
    labs = batch["labs"]
    coded = labs.head(1).with_columns(observation_id=pl.lit("X-coded"), loinc=pl.lit("94500-6"), value_type=pl.lit(
        "coded"), value=pl.lit(None, pl.Float64), lab=pl.lit(None, pl.String), unit=pl.lit(None, pl.String))
    batch["labs"] = pl.concat([set_rows(labs, "observation_id", ["O0-crp"], value=None), coded])
    report = validate_tables(batch, gx=False)
    assert report.tables["labs"].quarantine_reasons == {"labs.value_not_null": 1, "labs.value_code_not_null": 1}
