"""FHIR R4 resources of one synthetic patient, as plain JSON dicts (what a bulk $export writes, one per line).

Why plain dicts and no fhir.resources models here: building a cohort must stay fast (the models cost ~1 ms per
resource to validate), and the ingest side validates anyway. Tests parse every resource with the R4B models.

The resources mirror a hospital's EHR extract, PHI included: the Patient carries name, MRN, SSN, phone, address,
birth place, mother's maiden name and a next of kin; notes and reports carry PHI in free text. The label is the
encounter diagnosis (Condition, ICD-10-CM); survival is derived from Patient.deceasedDateTime or, for censored
patients, from the last (ambulatory follow-up) Encounter. Each modality's resources exist only when the patient
has that modality: Observations (labs), DiagnosticReports (imaging), DocumentReference (notes).

Times are the identity's wall-clock times, written as UTC ("Z"); every value is a pure function of the record.
"""

from __future__ import annotations

import base64
import html
from datetime import datetime, timedelta

import numpy as np

from data_contracts import LabCode, diagnosis_classes, lab_catalog
from tasks.synth.model import CLASSES, LABS
from tasks.synth.notes import (
    clinical_note,
    ct_accession,
    exam_times,
    impression,
    next_of_kin,
    note_time,
    radiology_report,
)
from tasks.synth.record import FAMILY, PatientRecord

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"
V2_ID_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"
V3_ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
EXT_BIRTHPLACE = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"
EXT_MAIDEN_NAME = "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName"

# the fine-tuning label, per class in model.CLASSES order: (ICD-10-CM code, display)
DIAGNOSES: dict[str, tuple[str, str]] = {c.name: (c.code, c.display) for c in diagnosis_classes()}  # labels.yaml
# (LOINC code, display, title) of each imaging exam's report
EXAM_CODES = {"cxr": ("36643-5", "XR Chest 2 Views", "Chest radiograph report"),
              "ct": ("24627-2", "CT Chest", "CT angiography chest report")}
H_AND_P = ("34117-2", "History and physical note")
BIRTH_CITIES = ("Springfield", "Riverside", "Fairview", "Georgetown", "Salem", "Madison", "Clinton", "Franklin")
FOLLOW_UP_MINUTES = 30
RESOURCE_TYPES = ("Patient", "Encounter", "Observation", "Condition", "DiagnosticReport", "DocumentReference")


def _ts(dt: datetime) -> str:
    """A FHIR dateTime/instant: seconds and a zone are required once there is a time of day."""
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _coding(system: str, code: str, display: str) -> dict:
    return {"coding": [{"system": system, "code": code, "display": display}]}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _site_url(record: PatientRecord, what: str) -> str:
    return f"https://{record.site.key}.example.org/{what}"


def _doctor(name: tuple[str, str]) -> dict:
    return {"display": f"Dr. {name[0]} {name[1]}"}


class _Refs:
    """Ids and references of one patient's resources, so every resource points at the same patient."""

    def __init__(self, record: PatientRecord):
        self.id = record.identity.fhir_id
        self.subject = {"reference": f"Patient/{self.id}"}
        self.stay = {"reference": f"Encounter/{self.id}-enc-1"}


def _patient(record: PatientRecord) -> dict:
    idt, site = record.identity, record.site
    rng = record.rng("fhir-patient")
    kin = next_of_kin(record)
    div = (f"<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>{html.escape(idt.full_name)}, MRN {idt.mrn}, "
           f"born {idt.birth_date.isoformat()}</p></div>")
    res = {
        "resourceType": "Patient", "id": idt.fhir_id,
        "text": {"status": "generated", "div": div},
        "extension": [
            {"url": EXT_MAIDEN_NAME, "valueString": str(rng.choice(FAMILY))},
            {"url": EXT_BIRTHPLACE, "valueAddress": {"city": str(rng.choice(BIRTH_CITIES)), "country": "US"}},
        ],
        "identifier": [
            {"use": "usual", "type": _coding(V2_ID_TYPE, "MR", "Medical record number"),
             "system": _site_url(record, "mrn"), "value": idt.mrn},
            {"use": "official", "type": _coding(V2_ID_TYPE, "SS", "Social Security number"),
             "system": SSN_SYSTEM, "value": idt.ssn},
        ],
        "active": True,
        "name": [{"use": "official", "text": idt.full_name, "family": idt.family, "given": [idt.given]}],
        "telecom": [{"system": "phone", "value": idt.phone, "use": "home"}],
        "gender": idt.sex,
        "birthDate": idt.birth_date.isoformat(),
        "address": [{"use": "home", "line": [idt.street], "city": site.city, "postalCode": idt.postal_code,
                     "country": "US"}],
        "contact": [{
            "relationship": [{**_coding("http://terminology.hl7.org/CodeSystem/v2-0131", "N", "Next-of-Kin"),
                              "text": kin.relation}],
            "name": {"text": kin.name, "family": kin.family, "given": [kin.given]},
            "telecom": [{"system": "phone", "value": kin.phone, "use": "mobile"}],
        }],
        "managingOrganization": {"display": site.institution},
    }
    if record.evidence.event:
        death = idt.discharge.date() + timedelta(days=record.evidence.survival_days)
        res["deceasedDateTime"] = death.isoformat()
    return res


def _encounters(record: PatientRecord, refs: _Refs) -> list[dict]:
    """The inpatient stay, and for censored patients the follow-up visit that says when they were last seen."""
    idt, ev = record.identity, record.evidence
    stay = {
        "resourceType": "Encounter", "id": f"{refs.id}-enc-1", "status": "finished",
        "class": {"system": V3_ACT, "code": "IMP", "display": "inpatient encounter"},
        "type": [_coding("http://snomed.info/sct", "32485007", "Hospital admission")],
        "subject": refs.subject,
        "participant": [{"type": [_coding("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "ATND",
                                          "attender")], "individual": _doctor(idt.attending)}],
        "period": {"start": _ts(idt.admit), "end": _ts(idt.discharge)},
        "hospitalization": {"dischargeDisposition": _coding(
            "http://terminology.hl7.org/CodeSystem/discharge-disposition", "home", "Home")},
        "serviceProvider": {"display": record.site.institution},
    }
    if ev.event:
        return [stay]
    seen = datetime.combine(idt.discharge.date() + timedelta(days=ev.survival_days), datetime.min.time())
    seen += timedelta(hours=10)  # a morning clinic; the date is what carries the follow-up time
    follow_up = {
        "resourceType": "Encounter", "id": f"{refs.id}-enc-2", "status": "finished",
        "class": {"system": V3_ACT, "code": "AMB", "display": "ambulatory"},
        "type": [_coding("http://snomed.info/sct", "185389009", "Follow-up visit")],
        "subject": refs.subject,
        "period": {"start": _ts(seen), "end": _ts(seen + timedelta(minutes=FOLLOW_UP_MINUTES))},
        "serviceProvider": {"display": record.site.institution},
    }
    return [stay, follow_up]


def _decimals(lab: LabCode, unit: str, canonical_decimals: int) -> int:
    """Digits a lab reports in `unit`: enough that converting back keeps the canonical precision."""
    if unit == lab.canonical:
        return canonical_decimals
    factor = lab.alternatives[unit][0]
    return max(0, canonical_decimals + int(np.ceil(np.log10(factor) - 1e-9)))


def _quantity(lab: LabCode, value: float, unit: str, decimals: int) -> dict:
    shown = round(lab.from_canonical(float(value), unit), decimals)
    return {"value": int(shown) if decimals == 0 else shown, "unit": unit, "system": UCUM, "code": unit}


def _observations(record: PatientRecord, refs: _Refs) -> list[dict]:
    """One Observation per measurement, in the site's units, at sorted times within the stay."""
    idt, catalog = record.identity, lab_catalog()
    rng = record.rng("fhir-times")
    stay_minutes = int((idt.discharge - idt.admit).total_seconds() // 60)
    out = []
    for spec in LABS:
        lab, values = catalog[spec.key], record.evidence.lab_values[spec.key]
        unit = record.site.units.get(spec.key, lab.canonical)
        decimals = _decimals(lab, unit, spec.decimals)
        minutes = np.sort(rng.integers(0, stay_minutes + 1, len(values)))
        category = "laboratory" if lab.category == "laboratory" else "vital-signs"
        for value, minute in zip(values, minutes, strict=True):
            out.append({
                "resourceType": "Observation", "id": f"{refs.id}-obs-{len(out) + 1}", "status": "final",
                "category": [_coding(OBS_CATEGORY, category, category.replace("-", " ").title())],
                "code": {**_coding(LOINC, lab.loinc, lab.display), "text": lab.display},
                "subject": refs.subject, "encounter": refs.stay,
                "effectiveDateTime": _ts(idt.admit + timedelta(minutes=int(minute))),
                "valueQuantity": _quantity(lab, value, unit, decimals),
            })
    return out


def _condition(record: PatientRecord, refs: _Refs) -> dict:
    code, display = DIAGNOSES[CLASSES[record.evidence.label]]
    return {
        "resourceType": "Condition", "id": f"{refs.id}-cond-1",
        "clinicalStatus": _coding("http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active"),
        "verificationStatus": _coding("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed",
                                      "Confirmed"),
        "category": [_coding("http://terminology.hl7.org/CodeSystem/condition-category", "encounter-diagnosis",
                             "Encounter Diagnosis")],
        "code": {**_coding(ICD10CM, code, display), "text": display},
        "subject": refs.subject, "encounter": refs.stay,
        "recordedDate": _ts(record.identity.discharge),
    }


def _diagnostic_report(record: PatientRecord, refs: _Refs, exam: str, when: datetime) -> dict:
    code, display, title = EXAM_CODES[exam]
    text = radiology_report(record, exam)
    accession = record.identity.accession if exam == "cxr" else ct_accession(record)
    return {
        "resourceType": "DiagnosticReport", "id": f"{refs.id}-dr-{exam}",
        "identifier": [{"type": _coding(V2_ID_TYPE, "ACSN", "Accession ID"),
                        "system": _site_url(record, "accession"), "value": accession}],
        "status": "final",
        "category": [_coding("http://terminology.hl7.org/CodeSystem/v2-0074", "RAD", "Radiology")],
        "code": {**_coding(LOINC, code, display), "text": display},
        "subject": refs.subject, "encounter": refs.stay,
        "effectiveDateTime": _ts(when), "issued": _ts(when + timedelta(hours=1)),
        "resultsInterpreter": [_doctor(record.identity.radiologist)],
        "conclusion": impression(text),
        "presentedForm": [{"contentType": "text/plain", "data": _b64(text), "title": title}],
    }


def _document(record: PatientRecord, refs: _Refs) -> dict:
    idt = record.identity
    signed = _ts(note_time(record))
    return {
        "resourceType": "DocumentReference", "id": f"{refs.id}-doc-1", "status": "current", "docStatus": "final",
        "type": {**_coding(LOINC, *H_AND_P), "text": H_AND_P[1]},
        "category": [_coding("http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
                             "clinical-note", "Clinical Note")],
        "subject": refs.subject, "date": signed,
        "author": [_doctor(idt.attending)], "custodian": {"display": record.site.institution},
        "content": [{"attachment": {"contentType": "text/plain", "language": "en-US",
                                    "data": _b64(clinical_note(record)), "title": "Admission history and physical",
                                    "creation": signed}}],
        "context": {"encounter": [refs.stay], "period": {"start": _ts(idt.admit), "end": _ts(idt.discharge)}},
    }


def patient_resources(record: PatientRecord) -> dict[str, list[dict]]:
    """All FHIR R4 resources of one patient, keyed by resourceType in `RESOURCE_TYPES` order (every key present,
    possibly with an empty list); same record, same dicts."""
    refs, present = _Refs(record), record.evidence.present
    out: dict[str, list[dict]] = {t: [] for t in RESOURCE_TYPES}
    out["Patient"].append(_patient(record))
    out["Encounter"] += _encounters(record, refs)
    if present["labs"]:
        out["Observation"] += _observations(record, refs)
    out["Condition"].append(_condition(record, refs))
    if present["imaging"]:
        out["DiagnosticReport"] += [_diagnostic_report(record, refs, exam, when)
                                    for exam, when in exam_times(record).items()]
    if present["notes"]:
        out["DocumentReference"].append(_document(record, refs))
    return out
