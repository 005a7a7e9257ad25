"""Patient-referencing clinical resources outside the dedicated tables -> rows of the typed `events` table.

Medications, procedures, allergies, immunisations, orders, plans, specimens, family history: each says "this
happened to this patient at this time, coded so". One table holds them all, one row per resource, so that a new
type is one entry in EVENT_TYPES (which element is the patient, the encounter, the code, the time and the value)
rather than a table, a contract and a schema of its own.

The row is built from the de-identified resource (tasks/deid/fhir_walk.py has already pseudonymised its id and
references and shifted its dates by the patient's offset) through the same allow-list discipline as
fhir_flatten.py: a code is staged only with the grammar of its system, a status only from FHIR's own value sets
(the contract's list), a time only when it is a FHIR date, a value only when it is a number. The record's free text
(`display`, `text`, `note`, `patientInstruction`, `occurrenceString`, ...) is never read here, so it cannot reach
the table; `display` comes from the code system's label where the project has one (data_contracts/labels.yaml).
Types with no patient subject (Organization, Medication, Practitioner, ...) are not events: fhir_parse keeps them
in landing under `fhir.unsupported_type` as before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from data_contracts import diagnosis_classes
from data_contracts.contract import load_contracts
from tasks.deid.dates import FHIR_DATE

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
ICD10 = re.compile(r"[A-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{1,4})?")
# The grammar of each code system's codes: a code that does not have it is not staged (it may be anything typed).
SYSTEM_GRAMMAR = {
    RXNORM: re.compile(r"\d{1,9}"),
    "http://hl7.org/fhir/sid/cvx": re.compile(r"\d{1,3}"),
    "http://hl7.org/fhir/sid/ndc": re.compile(r"\d{4,5}-\d{3,4}-\d{1,2}|\d{10,11}"),
    SNOMED: re.compile(r"\d{6,18}"),
    "http://loinc.org": re.compile(r"\d{1,7}-\d"),
    "http://www.ama-assn.org/go/cpt": re.compile(r"\d{4}[0-9FTU]"),
    "http://www.cms.gov/Medicare/Coding/ICD10": re.compile(r"[0-9A-HJ-NP-Z]{7}"),  # ICD-10-PCS
    "http://hl7.org/fhir/sid/icd-10-cm": ICD10,
    "http://hl7.org/fhir/sid/icd-10": ICD10,
    "http://www.whocc.no/atc": re.compile(r"[A-Z]\d{2}(?:[A-Z](?:[A-Z](?:\d{2})?)?)?"),
    "http://dicom.nema.org/resources/ontology/DCM": re.compile(r"[A-Z]{2,3}|\d{5,6}"),  # modalities, DCM codes
    "http://terminology.hl7.org/CodeSystem/v3-RoleCode": re.compile(r"[A-Z]{2,10}"),  # family relationships
}
# An unknown system's code: only the shapes of SNOMED, LOINC and ICD-10 codes (never a word, which may be a name),
# staged without its system (an unknown system URI is itself input).
GENERIC_CODE = re.compile(r"\d{1,18}|\d{1,7}-\d|[A-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{1,4})?")


@dataclass(frozen=True)
class EventType:
    """Where one resource type keeps what a row needs; each entry is a list of element paths, first present wins.

    A path is dotted; `[0]` takes a repeating element's first item. `code` paths end at a CodeableConcept (or a
    Coding), `time` paths at a FHIR date/dateTime, `value` paths at a number."""

    patient: str
    encounter: str | None
    code: tuple[str, ...]
    time: tuple[str, ...]
    value: tuple[str, ...] = ()
    status: str = "status"  # a code element, or a CodeableConcept (AllergyIntolerance.clinicalStatus)


MEDICATION = ("medicationCodeableConcept", "medicationReference")  # a reference resolves to a contained Medication
EVENT_TYPES = {
    "MedicationRequest": EventType("subject", "encounter", MEDICATION, ("authoredOn",),
                                   ("dosageInstruction[0].doseAndRate[0].doseQuantity.value",)),
    "MedicationStatement": EventType("subject", "context", MEDICATION,
                                     ("effectiveDateTime", "effectivePeriod.start", "dateAsserted"),
                                     ("dosage[0].doseAndRate[0].doseQuantity.value",)),
    "MedicationAdministration": EventType("subject", "context", MEDICATION,
                                          ("effectiveDateTime", "effectivePeriod.start"), ("dosage.dose.value",)),
    "MedicationDispense": EventType("subject", "context", MEDICATION, ("whenHandedOver", "whenPrepared"),
                                    ("quantity.value",)),
    "Procedure": EventType("subject", "encounter", ("code",), ("performedDateTime", "performedPeriod.start")),
    "AllergyIntolerance": EventType("patient", "encounter", ("code",),
                                    ("onsetDateTime", "onsetPeriod.start", "recordedDate"), status="clinicalStatus"),
    "Immunization": EventType("patient", "encounter", ("vaccineCode",), ("occurrenceDateTime", "recorded"),
                              ("doseQuantity.value",)),
    "ImagingStudy": EventType("subject", "encounter", ("procedureCode[0]", "modality[0]"), ("started",)),
    "ServiceRequest": EventType("subject", "encounter", ("code",),
                                ("authoredOn", "occurrenceDateTime", "occurrencePeriod.start"),
                                ("quantityQuantity.value",)),
    "DeviceRequest": EventType("subject", "encounter", ("codeCodeableConcept",),
                               ("authoredOn", "occurrenceDateTime", "occurrencePeriod.start")),
    "CarePlan": EventType("subject", "encounter", ("category[0]",), ("period.start", "created")),
    "Specimen": EventType("subject", None, ("type",),
                          ("collection.collectedDateTime", "collection.collectedPeriod.start", "receivedTime"),
                          ("collection.quantity.value",)),
    "FamilyMemberHistory": EventType("patient", None, ("condition[0].code", "relationship"), ("date",)),
    "NutritionOrder": EventType("patient", "encounter", ("oralDiet.type[0]", "enteralFormula.baseFormulaType"),
                                ("dateTime",)),
    "Goal": EventType("subject", None, ("description", "category[0]"), ("startDate", "statusDate"),
                      status="lifecycleStatus"),
    "Flag": EventType("subject", "encounter", ("code",), ("period.start",)),
    "RiskAssessment": EventType("subject", "encounter", ("code", "method"),
                                ("occurrenceDateTime", "occurrencePeriod.start"),
                                ("prediction[0].probabilityDecimal",)),
    "ClinicalImpression": EventType("subject", "encounter", ("code",),
                                    ("effectiveDateTime", "effectivePeriod.start", "date")),
    "DetectedIssue": EventType("patient", None, ("code",), ("identifiedDateTime", "identifiedPeriod.start")),
    "EpisodeOfCare": EventType("patient", None, ("type[0]",), ("period.start",)),
    "DeviceUseStatement": EventType("subject", None, ("reasonCode[0]", "bodySite"),
                                    ("timingDateTime", "timingPeriod.start", "recordedOn")),
    "AdverseEvent": EventType("subject", "encounter", ("event",), ("date", "detected")),
    "Communication": EventType("subject", "encounter", ("category[0]", "reasonCode[0]"), ("sent", "received")),
    "CommunicationRequest": EventType("subject", "encounter", ("category[0]",), ("authoredOn", "occurrenceDateTime")),
    "Media": EventType("subject", "encounter", ("modality", "type"), ("createdDateTime", "createdPeriod.start")),
    "QuestionnaireResponse": EventType("subject", "encounter", (), ("authored",)),
    "Consent": EventType("patient", None, ("category[0]", "scope"), ("dateTime",)),
    "ImmunizationEvaluation": EventType("patient", None, ("targetDisease",), ("date",)),
    "ImmunizationRecommendation": EventType("patient", None, ("recommendation[0].vaccineCode[0]",), ("date",)),
    "VisionPrescription": EventType("patient", "encounter", (), ("dateWritten",)),
    "RequestGroup": EventType("subject", "encounter", ("code",), ("authoredOn",)),
    # billing carries the diagnosis and procedure codes claims-based models train on
    "Claim": EventType("patient", None, ("type",), ("created", "billablePeriod.start")),
    "ExplanationOfBenefit": EventType("patient", None, ("type",), ("created", "billablePeriod.start")),
}
STEP = re.compile(r"(\w+)(\[0\])?")


def patient_element(resource_type: str) -> str:
    """The element naming the patient a resource is about (subject for most, patient for a few)."""
    spec = EVENT_TYPES.get(resource_type)
    return spec.patient if spec is not None else "subject"


def _get(node: object, path: str) -> object:
    for part in path.split("."):
        match = STEP.fullmatch(part)
        node = node.get(match[1]) if isinstance(node, dict) and match else None
        if match and match[2]:
            node = node[0] if isinstance(node, list) and node else None
        if node is None:
            return None
    return node


@cache
def event_statuses() -> frozenset[str]:
    """FHIR's status codes of the event types, as data_contracts/contracts/events.yaml lists them."""
    return frozenset(str(v) for v in load_contracts()["events"].expectation("events.status_known").args["values"])


@cache
def known_systems() -> frozenset[str]:
    return frozenset(str(v) for v in load_contracts()["events"].expectation("events.system_known").args["values"])


@cache
def _labels() -> dict[tuple[str, str], str]:
    return {(c.system, c.code): c.display for c in diagnosis_classes()}


def checked_event_code(system: object, code: object) -> tuple[str | None, str | None]:
    """(system, code) when the code has its system's grammar; an unknown system's code only by GENERIC_CODE, and
    then without its system; (None, None) otherwise."""
    if not isinstance(code, str):
        return None, None
    if isinstance(system, str) and system in SYSTEM_GRAMMAR:
        return (system, code) if SYSTEM_GRAMMAR[system].fullmatch(code) else (None, None)
    return (None, code) if GENERIC_CODE.fullmatch(code) else (None, None)


def _codings(concept: object) -> list[dict]:
    if isinstance(concept, dict) and "code" in concept and "coding" not in concept:
        return [concept]  # a bare Coding (ImagingStudy.modality)
    codings = concept.get("coding") if isinstance(concept, dict) else None
    return [c for c in codings if isinstance(c, dict)] if isinstance(codings, list) else []


def _contained(res: dict, ref: object) -> dict | None:
    """The contained resource a local reference (`#id`, pseudonymised alike on both sides) points to."""
    target = ref.get("reference") if isinstance(ref, dict) else None
    if not isinstance(target, str) or not target.startswith("#"):
        return None
    contained = res.get("contained")
    found = [c for c in contained if isinstance(c, dict) and c.get("id") == target[1:]] if isinstance(
        contained, list) else []
    return found[0] if found else None


def _code(res: dict, spec: EventType) -> tuple[str | None, str | None]:
    """The first coding of the first present code element whose code passes its grammar; known systems first."""
    for path in spec.code:
        concept = _get(res, path)
        if path == "medicationReference":
            concept = (_contained(res, concept) or {}).get("code")
        codings = _codings(concept)
        checked = [checked_event_code(c.get("system"), c.get("code")) for c in codings]
        best = next((sc for sc in checked if sc[0] is not None), None) or next(
            (sc for sc in checked if sc[1] is not None), None)
        if best is not None:
            return best
    return None, None


def _time(res: dict, spec: EventType) -> str | None:
    for path in spec.time:
        value = _get(res, path)
        if isinstance(value, str) and FHIR_DATE.fullmatch(value):
            return value
    return None


def _value(res: dict, spec: EventType) -> float | None:
    for path in spec.value:
        value = _get(res, path)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def _status(res: dict, spec: EventType) -> str | None:
    value = res.get(spec.status)
    if isinstance(value, dict):
        value = next((c.get("code") for c in _codings(value)), None)
    return value if isinstance(value, str) and value in event_statuses() else None


def _ref_id(ref: object) -> str | None:
    value = ref.get("reference") if isinstance(ref, dict) else None
    return value.split("/", 1)[1] if isinstance(value, str) and value.startswith("Encounter/") else None


def event_row(res: dict) -> dict:
    """One events row of a de-identified resource of a type in EVENT_TYPES (patient, site and source are added by
    the caller, as for every table)."""
    rtype = res["resourceType"]
    spec = EVENT_TYPES[rtype]
    system, code = _code(res, spec)
    return {"event_id": f"{rtype}/{res['id']}", "resource_type": rtype,
            "encounter_id": _ref_id(_get(res, spec.encounter)) if spec.encounter else None,
            "time": _time(res, spec), "status": _status(res, spec), "system": system, "code": code,
            "display": _labels().get((system or "", code or "")), "value": _value(res, spec)}


EVENT_FLATTEN = {rtype: event_row for rtype in EVENT_TYPES}
EVENT_TABLE_OF = {rtype: "events" for rtype in EVENT_TYPES}
