"""FHIR resources, notes and radiology reports of synthetic patients.

Validation uses `fhir.resources.R4B`: fhir.resources 8 ships R5 at the top level, R4B and STU3 as subpackages, and no
plain R4. R4B (4.3.0) left Patient, Encounter, Observation, Condition, DiagnosticReport and DocumentReference as in
R4, whereas R5 changed them (Encounter.class became a list, period became actualPeriod), so R4B is the closest check.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import replace
from datetime import date, datetime

import numpy as np
import pytest
from fhir.resources.R4B import get_fhir_model_class

from data_contracts import lab_by_loinc, lab_catalog
from tasks.synth.fhir import DIAGNOSES, RESOURCE_TYPES, patient_resources
from tasks.synth.model import CLASSES, LAB_BY_KEY, SYMPTOMS, biology, sample_evidence
from tasks.synth.notes import (
    CARDIOMEGALY_CTR,
    DEFECT_LEVELS,
    NEGATION_PHRASES,
    SYMPTOM_PHRASES,
    TERSE_PHRASES,
    clinical_note,
    next_of_kin,
    radiology_report,
)
from tasks.synth.record import PatientRecord, make_identity
from tasks.synth.sites import make_sites

BIO = biology()
SITES = make_sites(3)
STYLES = ("soap", "narrative", "terse")


def make_record(i: int, missing_rate: float = 0.0, seed: int = 7) -> PatientRecord:
    ev = sample_evidence(np.random.default_rng([seed, i]), BIO, missing_rate=missing_rate)
    identity = make_identity(np.random.default_rng([seed, i, 99]), i % 3, i, ev)
    return PatientRecord(seed=seed, index=i, site=SITES[i % 3], identity=identity, evidence=ev)


@pytest.fixture(scope="module")
def records() -> list[PatientRecord]:
    return [make_record(i, missing_rate=0.2) for i in range(60)]


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)


# ---------------------------------------------------------------- a deterministic note reader


_MATCHERS = sorted(((phrase, name) for name, phrases in SYMPTOM_PHRASES.items() for phrase in phrases),
                   key=lambda item: -len(item[0]))
_CUE = re.compile(r"\b(?:" + "|".join(re.escape(c) for c in NEGATION_PHRASES) + r")\b", re.IGNORECASE)


def read_symptoms(text: str) -> tuple[set[str], set[str]]:
    """(present, negated) symptoms of a note: sentence-scoped negation, longest phrase first."""
    present, negated = set(), set()
    for sentence in re.split(r"[.;\n]", text):
        cue = _CUE.search(sentence)
        cue_at = cue.start() if cue else len(sentence)
        taken = np.zeros(len(sentence), dtype=bool)
        for phrase, name in _MATCHERS:
            for m in re.finditer(r"\b" + re.escape(phrase) + r"\b", sentence, re.IGNORECASE):
                if taken[m.start():m.end()].any():
                    continue
                taken[m.start():m.end()] = True
                (negated if m.start() > cue_at else present).add(name)
    return present, negated


def test_phrase_lists_are_unambiguous() -> None:
    assert set(SYMPTOM_PHRASES) == set(SYMPTOMS)
    for name, phrases in SYMPTOM_PHRASES.items():
        assert set(TERSE_PHRASES[name]) <= set(phrases)
        for phrase in phrases:
            assert read_symptoms(f"Reports {phrase}.") == ({name}, set()), phrase
            assert read_symptoms(f"Denies {phrase}.") == (set(), {name}), phrase


@pytest.mark.parametrize("style", STYLES)
def test_notes_round_trip_symptoms(style: str) -> None:
    negations = 0
    for i in range(50):
        rec = make_record(i)
        rec = replace(rec, site=replace(rec.site, note_style=style))
        truth = {name for name, on in zip(SYMPTOMS, rec.evidence.symptoms, strict=True) if on}
        present, negated = read_symptoms(clinical_note(rec))
        assert present == truth, (i, clinical_note(rec))
        assert not negated & truth
        negations += len(negated)
    assert negations > 20  # the reader's negation path is exercised


def test_notes_carry_phi_but_no_label(records: list[PatientRecord]) -> None:
    for rec in records:
        idt, note = rec.identity, clinical_note(rec)
        kin = next_of_kin(rec)
        for phi in (idt.full_name, idt.mrn, idt.phone, idt.attending[1]):
            assert phi in note, (phi, note)
        assert kin.name in note and idt.street in note
        assert idt.birth_date.strftime("%m/%d/%Y") in note or f"{idt.birth_date:%B} {idt.birth_date.day}," in note
        assert str(idt.admit.year) in note and idt.admit.strftime("%H:%M") in note
        lowered = note.lower()
        assert not any(word in lowered for word in ("pneumonia", "heart failure", "embolism", "cardiomegaly"))


def test_radiology_report_follows_imaging_evidence() -> None:
    seen = set()
    for i in range(80):
        rec = make_record(i)
        ev, report = rec.evidence, radiology_report(rec)
        assert ("cardiomegaly" in report.lower()) == (ev.ctr > CARDIOMEGALY_CTR), (ev.ctr, report)
        assert ("CT ANGIOGRAPHY" in report) == ev.has_ct
        embolus = ev.has_ct and np.exp(ev.log_defect) > DEFECT_LEVELS[1]
        assert ("consistent with acute pulmonary embolism" in report) == embolus
        for phi in (rec.identity.full_name, rec.identity.mrn, rec.identity.accession, rec.identity.radiologist[1],
                    rec.identity.referring[1]):
            assert phi in report
        seen.add(ev.ctr > CARDIOMEGALY_CTR)
    assert seen == {True, False}


# ---------------------------------------------------------------- FHIR


def test_resources_validate_as_fhir_r4(records: list[PatientRecord]) -> None:
    for rec in records:
        out = patient_resources(rec)
        assert tuple(out) == RESOURCE_TYPES
        ids = [r["id"] for rs in out.values() for r in rs]
        assert len(ids) == len(set(ids))
        for rtype, resources in out.items():
            for res in resources:
                assert res["resourceType"] == rtype
                get_fhir_model_class(rtype).model_validate(res)
                json.dumps(res)  # plain JSON types only


def _references(node) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "reference"] + [r for v in node.values() for r in _references(v)]
    if isinstance(node, list):
        return [r for v in node for r in _references(v)]
    return []


def test_references_point_to_the_patients_own_resources(records: list[PatientRecord]) -> None:
    for rec in records:
        out = patient_resources(rec)
        own = {f"{t}/{r['id']}" for t, rs in out.items() for r in rs}
        assert out["Patient"][0]["id"] == rec.identity.fhir_id
        for rtype, resources in out.items():
            for res in resources:
                refs = _references(res)
                assert set(refs) <= own, (rtype, refs)
                if rtype != "Patient":
                    assert res["subject"] == {"reference": f"Patient/{rec.identity.fhir_id}"}


def test_lab_values_round_trip_to_canonical_units(records: list[PatientRecord]) -> None:
    by_loinc = lab_by_loinc()
    for rec in (r for r in records if r.evidence.present["labs"]):
        out = patient_resources(rec)
        stay = out["Encounter"][0]["period"]
        got: dict[str, list[tuple[str, float]]] = {}
        for obs in out["Observation"]:
            lab = by_loinc[obs["code"]["coding"][0]["code"]]
            q = obs["valueQuantity"]
            assert q["unit"] == q["code"] == rec.site.units.get(lab.key, lab.canonical)
            assert q["system"] == "http://unitsofmeasure.org"
            assert _ts(stay["start"]) <= _ts(obs["effectiveDateTime"]) <= _ts(stay["end"])
            got.setdefault(lab.key, []).append((obs["effectiveDateTime"], lab.to_canonical(q["value"], q["unit"])))
        assert set(got) == set(rec.evidence.lab_values)
        for key, values in rec.evidence.lab_values.items():
            times = [t for t, _ in got[key]]
            assert times == sorted(times)
            half_step = 0.5 * 10.0 ** -LAB_BY_KEY[key].decimals + 1e-9
            np.testing.assert_allclose([v for _, v in got[key]], values, rtol=0, atol=half_step)


def test_site_units_are_honoured() -> None:
    rec = make_record(1)  # site index 1 reports CRP in mg/dL and temperature in degrees Fahrenheit
    units = {lab_by_loinc()[o["code"]["coding"][0]["code"]].key: o["valueQuantity"]["unit"]
             for o in patient_resources(rec)["Observation"]}
    assert units["crp"] == "mg/dL" and units["temperature"] == "[degF]"
    assert units["wbc"] == lab_catalog()["wbc"].canonical
    temps = [o["valueQuantity"]["value"] for o in patient_resources(rec)["Observation"]
             if o["code"]["coding"][0]["code"] == lab_catalog()["temperature"].loinc]
    assert all(90.0 < t < 110.0 for t in temps)


def test_label_and_survival_are_derivable(records: list[PatientRecord]) -> None:
    for rec in records:
        out, ev, idt = patient_resources(rec), rec.evidence, rec.identity
        (cond,) = out["Condition"]
        assert cond["code"]["coding"][0]["code"] == DIAGNOSES[CLASSES[ev.label]][0]
        patient = out["Patient"][0]
        if ev.event:
            last = date.fromisoformat(patient["deceasedDateTime"])
            assert len(out["Encounter"]) == 1
        else:
            assert "deceasedDateTime" not in patient
            last = _ts(out["Encounter"][-1]["period"]["start"]).date()
            assert out["Encounter"][-1]["class"]["code"] == "AMB"
        assert (last - idt.discharge.date()).days == ev.survival_days


def test_documents_decode_to_the_rendered_texts(records: list[PatientRecord]) -> None:
    for rec in records:
        out = patient_resources(rec)
        for doc in out["DocumentReference"]:
            text = base64.b64decode(doc["content"][0]["attachment"]["data"]).decode()
            assert text == clinical_note(rec)
        reports = {r["code"]["coding"][0]["code"]: r for r in out["DiagnosticReport"]}
        if rec.evidence.present["imaging"]:
            assert set(reports) == ({"36643-5", "24627-2"} if rec.evidence.has_ct else {"36643-5"})
            cxr = base64.b64decode(reports["36643-5"]["presentedForm"][0]["data"]).decode()
            assert cxr == radiology_report(rec, "cxr") and rec.identity.full_name in cxr
            assert reports["36643-5"]["conclusion"]


def test_deterministic() -> None:
    for i in (0, 1, 2, 17):
        first, again = patient_resources(make_record(i)), patient_resources(make_record(i))
        assert json.dumps(first) == json.dumps(again)
        assert clinical_note(make_record(i)) == clinical_note(make_record(i))
    assert patient_resources(make_record(3)) != patient_resources(make_record(3, seed=8))


@pytest.mark.parametrize("missing", ["labs", "notes", "imaging"])
def test_missing_modalities_leave_no_resources(missing: str) -> None:
    rec = make_record(5)
    ev = replace(rec.evidence, present={**rec.evidence.present, missing: False})
    out = patient_resources(replace(rec, evidence=ev))
    full = patient_resources(rec)
    gone = {"labs": "Observation", "notes": "DocumentReference", "imaging": "DiagnosticReport"}[missing]
    assert full[gone] and out[gone] == []
    assert tuple(out) == RESOURCE_TYPES
    assert out["Patient"] == full["Patient"] and out["Condition"] == full["Condition"]
