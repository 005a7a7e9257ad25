"""De-identified FHIR resources -> rows of the staged tables, through an allow-list.

De-identification (tasks/deid/fhir_walk.py) scrubs free text, but a scrubber only removes what it recognises: a
name typed into `Condition.code.coding.display` or an `Encounter.class` code is copied through unless something
says what may be there. So a staged column takes a value verbatim only when its content is coded or numeric and
checked here: a code from a value set (the contracts' own lists where they have one), a code of the right grammar
for its system, a FHIR date, a lab value converted to its code's canonical UCUM unit. Anything else is null.
Free-text-typed elements (a coding's `display`, a CodeableConcept's `text`) never reach a table: the conditions
table's `display`, for people reading it, comes from the code system (data_contracts/labels.yaml), not from the
record. The only free text staged is a note's, decoded by tasks/deid/fhir_attachment.py and scrubbed by scrub_text
during de-identification, and a lab's `valueString` (labs.value_text), a string de-identification scrubs the same
way (tasks/deid/fhir_walk.py).
"""

from __future__ import annotations

import re
from functools import cache

from data_contracts import diagnosis_classes
from data_contracts.contract import load_contracts
from tasks.deid.dates import FHIR_DATE
from tasks.deid.fhir_attachment import decode_attachment, is_text
from tasks.ingest.fhir_events import EVENT_FLATTEN, EVENT_TABLE_OF
from tasks.ingest.fhir_labs import VALUE_TYPES, Part, parts, propose_units, quantity
from tasks.ingest.lab_units import LabUnits

LOINC = "http://loinc.org"
ICD10 = re.compile(r"[A-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{1,4})?")
CODE_GRAMMAR = {LOINC: re.compile(r"\d{1,7}-\d"), "http://snomed.info/sct": re.compile(r"\d{6,18}"),
                "http://hl7.org/fhir/sid/icd-10-cm": ICD10, "http://hl7.org/fhir/sid/icd-10": ICD10}
OBSERVATION_CATEGORIES = frozenset({"social-history", "vital-signs", "imaging", "laboratory", "procedure", "survey",
                                    "exam", "therapy", "activity"})  # HL7 observation-category
CONDITION_CATEGORIES = frozenset({"problem-list-item", "encounter-diagnosis", "health-concern"})  # + US Core
ICD9 = re.compile(r"(?:\d{3}|V\d{2})(?:\.\d{1,2})?|E\d{3}(?:\.\d)?")
OPEN_GRAMMAR = {**CODE_GRAMMAR, "http://hl7.org/fhir/sid/icd-9-cm": ICD9}  # systems whose codes have a known shape
GENERIC_CODE = re.compile(r"[A-Za-z0-9.\-_:]{1,40}")  # any other system: no spaces, nothing a sentence needs
SYSTEM_URI = re.compile(r"https?://[A-Za-z0-9.-]+(?:/[A-Za-z0-9._~%/:-]*)?|urn:[A-Za-z0-9][A-Za-z0-9-]{0,31}:"
                        r"[A-Za-z0-9._~%:/-]+")  # as contracts/conditions.yaml's conditions.system_uri
INTERPRETATIONS = frozenset({"N", "A", "AA", "H", "HH", "HU", "L", "LL", "LU", "U", "D", "B", "W", "<", ">", "S",
                             "R", "I", "MS", "VS", "SDD", "SYN-R", "SYN-S", "NS", "POS", "NEG", "IND", "DET", "ND",
                             "E", "EX", "EXP", "HX", "LX", "NR", "RR", "WR", "CAR", "IE", "OBX", "QCF", "TOX",
                             "UNE"})  # HL7 v3 ObservationInterpretation


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


def open_coded(concept: object) -> tuple[str | None, str | None]:
    """(system, code) of the first coding whose system is an http(s)/urn URI and whose code has its system's grammar
    (OPEN_GRAMMAR), or the generic code grammar for a system we do not know: any code system, never free text."""
    for c in _codings(concept):
        system, code = c.get("system"), c.get("code")
        if not (isinstance(system, str) and len(system) <= 200 and SYSTEM_URI.fullmatch(system)
                and isinstance(code, str)):
            continue
        if OPEN_GRAMMAR.get(system, GENERIC_CODE).fullmatch(code):
            return system, code
    return None, None


def _lab_row(res: dict, units: LabUnits | None = None) -> list[dict]:
    """One row per part of the Observation with a value (the Observation's own, each component's): a component's
    row is `<observation id>/<component index>` with the Observation as its parent. Checked in fhir_parse (code,
    unit, range); `units` is the extract's LabUnits (without one, the first unit seen here is canonical)."""
    if units is None:
        units = LabUnits()
        propose_units(res, units)
        units.resolve()
    common = {"encounter_id": _ref_id(res.get("encounter")), "time": _date(res.get("effectiveDateTime")),
              "category": _in_set(_first(res.get("category")), OBSERVATION_CATEGORIES)}
    return [{**common, **_lab_part(res["id"], p, units)} for p in parts(res) if p.value_key is not None]


def _lab_part(obs_id: str, p: Part, units: LabUnits) -> dict:
    lab, node = units.lab(p.loinc), p.node
    row = {"observation_id": obs_id if p.index is None else f"{obs_id}/{p.index}",
           "parent_observation_id": None if p.index is None else obs_id, "loinc": p.loinc,
           "lab": lab.key if lab is not None else None, "value_type": VALUE_TYPES[p.value_key],
           "interpretation": _in_set(_first(node.get("interpretation")), INTERPRETATIONS)}
    if p.value_key == "valueQuantity":
        value, unit = quantity(node)
        converted = units.to_canonical(p.loinc, float(value), unit)
        if converted is None:  # fhir_parse checked it; a de-identified resource that differs is not staged
            raise ValueError("lab unit does not convert")
        low, high = (_reference(p.loinc, _dict(_first(node.get("referenceRange"))).get(k), unit, units)
                     for k in ("low", "high"))
        row |= {"value": converted, "unit": units.canonical(p.loinc), "source_unit": unit, "ref_low": low,
                "ref_high": high}
    elif p.value_key == "valueInteger":
        row["value"] = float(node["valueInteger"])
    elif p.value_key == "valueCodeableConcept":
        row["value_system"], row["value_code"] = open_coded(node["valueCodeableConcept"])
    elif p.value_key == "valueBoolean":
        row["value_boolean"] = node["valueBoolean"] if isinstance(node["valueBoolean"], bool) else None
    else:  # valueString: free text, scrubbed by de-identification (tasks/deid/fhir_walk.py) like a note's
        row["value_text"] = node["valueString"] if isinstance(node["valueString"], str) else None
    return row


def _reference(loinc: str, bound: object, value_unit: object, units: LabUnits) -> float | None:
    """A reference-range bound in the canonical unit (in the value's unit when it names none); null when it is not a
    number or its unit does not convert: a reference range is context, not a reason to quarantine a reading."""
    bound = _dict(bound)
    value, unit = bound.get("value"), bound.get("code", bound.get("unit", value_unit))
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    return units.to_canonical(loinc, float(value), unit)


def _condition_row(res: dict) -> dict:
    """Any code system (a well-formed URI), code by its grammar, display from the code system (labels.yaml)."""
    system, code = open_coded(res.get("code"))
    return {"condition_id": res["id"], "encounter_id": _ref_id(res.get("encounter")), "system": system,
            "code": code, "display": _condition_displays().get((system or "", code or "")),
            "category": _in_set(_first(res.get("category")), CONDITION_CATEGORIES),
            "recorded": _date(res.get("recordedDate"))}


def flatten(rtype: str, res: dict, units: LabUnits | None = None) -> list[dict]:
    """The staged rows of one de-identified resource: one for most types, one per value for an Observation (none
    for a panel without a value: it is ingested, its members are rows of their own)."""
    if rtype == "Observation":
        return _lab_row(res, units)
    return [FLATTEN[rtype](res)]


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
           "Condition": _condition_row, "DiagnosticReport": _report_row, "DocumentReference": _document_row,
           **EVENT_FLATTEN}
TABLE_OF = {"Patient": "patients", "Encounter": "encounters", "Observation": "labs", "Condition": "conditions",
            "DiagnosticReport": "notes", "DocumentReference": "notes", **EVENT_TABLE_OF}
