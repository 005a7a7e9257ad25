"""De-identified FHIR resources -> rows of the staged tables, through an allow-list.

De-identification (tasks/deid/fhir_walk.py) scrubs free text, but a scrubber only removes what it recognises: a
name typed into `Condition.code.coding.display` or an `Encounter.class` code is copied through unless something
says what may be there. So a staged column takes a value verbatim only when its content is coded or numeric and
checked here: a code from a value set (the contracts' own lists where they have one), a code of the right grammar
for its system, a FHIR date, a catalogued lab. Anything else is null. Free-text-typed elements (a coding's
`display`, a CodeableConcept's `text`) never reach a table: the conditions table's `display`, for people reading
it, comes from the code system (data_contracts/labels.yaml), not from the record. The only free text staged is a
note's, decoded by tasks/deid/fhir_attachment.py and scrubbed by scrub_text during de-identification.
"""

from __future__ import annotations

import re
from functools import cache

from data_contracts import diagnosis_classes, lab_by_loinc
from data_contracts.contract import load_contracts
from tasks.deid.dates import FHIR_DATE
from tasks.deid.fhir_attachment import decode_attachment, is_text

LOINC = "http://loinc.org"
ICD10 = re.compile(r"[A-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{1,4})?")
CODE_GRAMMAR = {LOINC: re.compile(r"\d{1,7}-\d"), "http://snomed.info/sct": re.compile(r"\d{6,18}"),
                "http://hl7.org/fhir/sid/icd-10-cm": ICD10, "http://hl7.org/fhir/sid/icd-10": ICD10}
OBSERVATION_CATEGORIES = frozenset({"social-history", "vital-signs", "imaging", "laboratory", "procedure", "survey",
                                    "exam", "therapy", "activity"})  # HL7 observation-category
CONDITION_CATEGORIES = frozenset({"problem-list-item", "encounter-diagnosis", "health-concern"})  # + US Core


@cache
def _contract_values(table: str, rule: str) -> frozenset[str]:
    """A contract's in_set values: the allow-list and the contract are one declaration."""
    return frozenset(str(v) for v in load_contracts()[table].expectation(rule).args["values"])


@cache
def _condition_displays() -> dict[tuple[str, str], str]:
    return {(c.system, c.code): c.display for c in diagnosis_classes()}


def encounter_classes() -> frozenset[str]:
    """HL7 v3 ActCode encounter classes (AMB, EMER, ..., VR), as data_contracts/contracts/encounters.yaml lists."""
    return _contract_values("encounters", "encounters.class_known")


def _member(value: object, allowed: frozenset[str] | dict) -> bool:
    return isinstance(value, str) and value in allowed


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _first(value: object) -> dict:
    """The first element of a repeating element (or the element itself when a sender did not repeat it)."""
    if isinstance(value, list):
        value = value[0] if value else {}
    return _dict(value)


def _codings(concept: object) -> list[dict]:
    codings = _dict(concept).get("coding")
    return [c for c in codings if isinstance(c, dict)] if isinstance(codings, list) else []


def checked_code(system: object, code: object) -> str | None:
    """`code` when it has the grammar of its system (of any system we know, when the system is not known)."""
    if not isinstance(code, str):
        return None
    grammars = [CODE_GRAMMAR[system]] if _member(system, CODE_GRAMMAR) else list(CODE_GRAMMAR.values())
    return code if any(g.fullmatch(code) for g in grammars) else None


def _coded(concept: object, system: str | None = None) -> tuple[str | None, str | None]:
    """(system, code) of the first coding (in `system`, if given) whose code passes `checked_code`."""
    for c in _codings(concept):
        if system is None or c.get("system") == system:
            code = checked_code(c.get("system"), c.get("code"))
            if code is not None:
                return (c["system"] if _member(c.get("system"), CODE_GRAMMAR) else None), code
    return None, None


def _in_set(concept: object, allowed: frozenset[str]) -> str | None:
    """The code of the first coding whose code is in the value set `allowed`; None when none is."""
    return next((c["code"] for c in _codings(concept) if _member(c.get("code"), allowed)), None)


def _date(value: object) -> str | None:
    return value if isinstance(value, str) and FHIR_DATE.fullmatch(value) else None


def _ref_id(ref: object) -> str | None:
    """The pseudonymous id of a `Type/<id>` reference (de-identification wrote it)."""
    value = _dict(ref).get("reference")
    return value.split("/", 1)[1] if isinstance(value, str) and "/" in value else None


def notes_text(attachments: list[object]) -> str:
    """A note's text: its text attachments, read the way de-identification wrote them, one blank line apart."""
    parts = [decode_attachment(a["contentType"], a["data"], "attachment") for a in map(_dict, attachments)
             if a.get("data") and is_text(a.get("contentType"))]
    return "\n\n".join(parts)


def _patient_row(res: dict) -> dict:
    death = _date(res.get("deceasedDateTime"))
    sex = res["gender"] if _member(res.get("gender"), _contract_values("patients", "patients.sex_known")) else None
    return {"patient_id": res["id"], "sex": sex, "birth_date": _date(res.get("birthDate")),
            "deceased": bool(death or res.get("deceasedBoolean") is True), "death_date": death}


def _encounter_row(res: dict) -> dict:
    """`class` is an HL7 v3 ActCode encounter class or null: a site's own class codes are not staged."""
    period, code = _dict(res.get("period")), _dict(res.get("class")).get("code")
    return {"encounter_id": res["id"], "class": code if _member(code, encounter_classes()) else None,
            "type_code": _coded(_first(res.get("type")))[1],
            "start": _date(period.get("start")), "end": _date(period.get("end"))}


def _lab_row(res: dict) -> dict:
    labs = lab_by_loinc()
    loinc = next(c["code"] for c in _codings(res.get("code")) if c.get("system") == LOINC
                 and _member(c.get("code"), labs))
    lab, qty = labs[loinc], res["valueQuantity"]  # checked in fhir_parse: code, unit and range are valid
    source_unit = qty.get("code", qty.get("unit"))
    return {"observation_id": res["id"], "encounter_id": _ref_id(res.get("encounter")), "loinc": loinc,
            "lab": lab.key, "category": _in_set(_first(res.get("category")), OBSERVATION_CATEGORIES),
            "value": float(lab.to_canonical(float(qty["value"]), source_unit)), "unit": lab.canonical,
            "source_unit": source_unit, "time": _date(res.get("effectiveDateTime"))}


def _condition_row(res: dict) -> dict:
    """System from the contract's list, code by its grammar, display from the code system (labels.yaml)."""
    system, code = _coded(res.get("code"))
    system = system if _member(system, _contract_values("conditions", "conditions.system_known")) else None
    return {"condition_id": res["id"], "encounter_id": _ref_id(res.get("encounter")), "system": system,
            "code": code, "display": _condition_displays().get((system or "", code or "")),
            "category": _in_set(_first(res.get("category")), CONDITION_CATEGORIES),
            "recorded": _date(res.get("recordedDate"))}


def _report_row(res: dict) -> dict:
    forms = res.get("presentedForm")
    return {"note_id": res["id"], "encounter_id": _ref_id(res.get("encounter")), "kind": "radiology_report",
            "loinc": _coded(res.get("code"), LOINC)[1], "time": _date(res.get("effectiveDateTime")),
            "text": notes_text(forms if isinstance(forms, list) else [])}


def _document_row(res: dict) -> dict:
    context, content = _dict(res.get("context")), res.get("content")
    return {"note_id": res["id"], "encounter_id": _ref_id(_first(context.get("encounter"))), "kind": "clinical_note",
            "loinc": _coded(res.get("type"), LOINC)[1], "time": _date(res.get("date")),
            "text": notes_text([_dict(c).get("attachment") for c in content] if isinstance(content, list) else [])}


FLATTEN = {"Patient": _patient_row, "Encounter": _encounter_row, "Observation": _lab_row,
           "Condition": _condition_row, "DiagnosticReport": _report_row, "DocumentReference": _document_row}
TABLE_OF = {"Patient": "patients", "Encounter": "encounters", "Observation": "labs", "Condition": "conditions",
            "DiagnosticReport": "notes", "DocumentReference": "notes"}
