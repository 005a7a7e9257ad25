"""FHIR R4 de-identification: one resource (a dict as parsed from NDJSON) in, a pseudonymised copy out.

Identity joins across modalities through the patient index the caller builds from the extract's Patient
resources (`patient_index`): a Patient's FHIR id maps to (site, MRN), and (site, MRN) is exactly what DICOM's
PatientID gives, so `Patient/<id>`, the MRN identifier and the DICOM PatientID all become the same pseudonym, and
the patient's dates move by the same offset in every modality. A patient of an earlier export (an incremental
export does not repeat unchanged Patients) resolves through `earlier`, FHIR id -> the pseudonym given then; the
date offset derives from the pseudonym, so it is the same too. The element rules live in fhir_walk.py.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

from data_contracts.deid import DeidConfig, default_config
from tasks.deid.dates import FHIR_DATE, age_on
from tasks.deid.errors import DeidError
from tasks.deid.fhir_walk import AGE_CAP_YEARS, REFERENCE, Walk, walk
from tasks.deid.pseudonym import Pseudonymizer
from tasks.deid.text import KnownIdentifiers

RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
SUBJECT_KEYS = ("subject", "patient", "beneficiary")
MRN_TYPE_CODE = "MR"  # HL7 v2 table 0203 "Medical record number"


@dataclass
class FhirDeidResult:
    """One resource's outcome; counters are keyed by action and by element path (ResourceType.element...)."""

    resource: dict
    actions: Counter[str]
    attributes: Counter[str]
    patient_pseudonym: str | None
    date_offset_days: int
    text_fields: int = 0  # free-text strings scrubbed, and scrub_text's replacement counts (never values)
    text_replacements: Counter[str] = field(default_factory=Counter)


def deidentify_resource(resource: dict, keys: Pseudonymizer, *, site: str, patients: Mapping[str, tuple[str, str]],
                        known: KnownIdentifiers | None = None, age_reference: date | None = None,
                        config: DeidConfig | None = None,
                        earlier: Callable[[str], str | None] | None = None) -> FhirDeidResult:
    """De-identify one FHIR R4 resource (Patient, Encounter, Observation, Condition, DiagnosticReport,
    DocumentReference or any other); the input is not modified.

    `patients` maps FHIR Patient id -> (site, MRN) for the extract; `known` holds this patient's identifiers for
    the free-text scrubber (see `known_identifiers`); `age_reference` is the date ages are computed at for the
    over-89 rule (default: today); `earlier` maps the FHIR id of a patient ingested before (not in `patients`) to
    its pseudonym, or None. Raises DeidError naming the rule, never a value.
    """
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not RESOURCE_TYPE.fullmatch(rtype):
        raise DeidError("fhir_resource_type", "resourceType is missing or not a FHIR type name")
    if rtype == "Bundle":
        raise DeidError("fhir_bundle", "de-identify a Bundle's entries one by one")
    config = config or default_config()
    w = Walk(keys=keys, site=site, patients=dict(patients), offset=0, known=known or KnownIdentifiers(),
             extension_safe_list=config.fhir_extension_safe_list, resource_type=rtype, mrns=_mrn_owners(patients, site),
             earlier=earlier)
    patient_id = str(resource.get("id", "")) if rtype == "Patient" else _subject_patient_id(resource)
    pseudonym = w.patient_pseudonym(patient_id) if patient_id else None
    w.offset = keys.date_offset_days(pseudonym) if pseudonym else keys.site_date_offset_days(site)
    body = walk(resource, rtype, w)
    out: dict = {"resourceType": rtype}
    if "id" in resource:
        out["id"] = pseudonym if rtype == "Patient" else keys.resource_id(site, rtype, str(resource["id"]))
        w.count("U", f"{rtype}.id")
    out.update({k: v for k, v in body.items() if k != "resourceType"})
    if rtype == "Patient" and isinstance(resource.get("birthDate"), str) and "birthDate" in out:
        _cap_birth_date(resource, out, w, age_reference or date.today())
    return FhirDeidResult(out, w.actions, w.attributes, pseudonym, w.offset, w.text_fields, w.text_replacements)


def patient_index(patients: Iterable[dict], site: str, mrn_system: str | None = None) -> dict[str, tuple[str, str]]:
    """FHIR Patient id -> (site, MRN) from an extract's Patient resources.

    The MRN is the identifier typed MR (HL7 v2-0203) or, when `mrn_system` is given, the one in that system.
    Patients without one are left out: their resources then fail with rule fhir_unknown_patient (quarantined).
    """
    index: dict[str, tuple[str, str]] = {}
    for patient in patients:
        if patient.get("resourceType") != "Patient" or not patient.get("id"):
            continue
        for ident in patient.get("identifier") or []:
            if not isinstance(ident, dict) or not isinstance(ident.get("type") or {}, dict):
                continue
            codes = {c.get("code") for c in (ident.get("type") or {}).get("coding") or [] if isinstance(c, dict)}
            if ident.get("value") and (MRN_TYPE_CODE in codes or (mrn_system and ident.get("system") == mrn_system)):
                index[str(patient["id"])] = (site, str(ident["value"]))
                break
    return index


def known_identifiers(patient: dict, staff_names: Iterable[str] = (), organizations: Iterable[str] = (),
                      age_reference: date | None = None, other_names: tuple[str, ...] = ()) -> KnownIdentifiers:
    """What a Patient resource tells the free-text scrubber to look for in the same patient's notes: names (the
    patient's and the contacts'), phones, e-mails, address parts, identifiers, the managing organisation, and the
    birth date to hide rather than shift when the patient is over 89 at `age_reference` (default today) or death.

    `staff_names` and `other_names` (everyone else the extract names: other patients, relatives, related persons)
    are built once per extract by the caller: given as tuples, the same objects are shared by every patient's
    KnownIdentifiers (they can hold thousands of names)."""
    people = [*(patient.get("name") or []), *(c.get("name") for c in patient.get("contact") or []
                                              if isinstance(c, dict) and c.get("name"))]
    telecom = [t for t in patient.get("telecom") or [] if isinstance(t, dict)]
    addresses = [part for a in patient.get("address") or [] if isinstance(a, dict) for part in
                 [*(a.get("line") or []), a.get("city") or "", a.get("postalCode") or "", a.get("text") or ""]]
    ids = [str(i.get("value")) for i in patient.get("identifier") or [] if isinstance(i, dict) and i.get("value")]
    ssn_like = [v for v in ids if re.fullmatch(r"\d{3}-?\d{2}-?\d{4}", v)]
    managing = patient.get("managingOrganization")
    return KnownIdentifiers(
        patient_names=human_names(people), other_names=other_names,
        staff_names=staff_names if isinstance(staff_names, tuple) else tuple(staff_names),
        phones=tuple(t.get("value", "") for t in telecom if t.get("system") in {"phone", "fax", "sms", "pager"}),
        emails=tuple(t.get("value", "") for t in telecom if t.get("system") == "email"),
        ssns=tuple(ssn_like), addresses=tuple(addresses),
        mrns=tuple(v for v in ids if v not in ssn_like), other_ids=(str(patient.get("id", "")),),
        organizations=(*organizations, str((managing if isinstance(managing, dict) else {}).get("display", ""))),
        protected_dates=_over_89_birth_date(patient, age_reference or date.today()))


def human_names(names: Iterable[object]) -> tuple[str, ...]:
    """Given names, family name and text of some HumanName elements, for the scrubber to look for (not prefixes or
    suffixes: "Dr" or "Jr" as a name would erase every title in the notes)."""
    out: list[str] = []
    for name in names:
        if not isinstance(name, dict):
            continue
        given = name.get("given") or []
        out.extend(p for p in (given if isinstance(given, list) else [given]) if isinstance(p, str))
        out.extend(name[k] for k in ("family", "text") if isinstance(name.get(k), str))
    return tuple(out)


def _mrn_owners(patients: Mapping[str, tuple[str, str]], site: str) -> dict[str, tuple[str, str]]:
    """MRN value -> (site, MRN); on a clash between sites this resource's own site wins."""
    owners: dict[str, tuple[str, str]] = {}
    for owner_site, mrn in patients.values():
        if mrn.strip() not in owners or owner_site == site:
            owners[mrn.strip()] = (owner_site, mrn)
    return owners


def _subject_patient_id(resource: dict) -> str | None:
    """The Patient a clinical resource is about (subject/patient/beneficiary), if any."""
    for key in SUBJECT_KEYS:
        ref = resource.get(key)
        match = REFERENCE.fullmatch(ref.get("reference", "")) if isinstance(ref, dict) else None
        if match and match["type"] == "Patient":
            return match["id"]
    return None


def _parse(value: object) -> date | None:
    """A FHIR date/dateTime as a date; partial dates read as their first day (the oldest reading of a birth)."""
    match = FHIR_DATE.fullmatch(str(value or ""))
    if match is None:
        return None
    try:
        return date(int(match[1]), int(match[2] or 1), int(match[3] or 1))
    except ValueError:
        return None


def _age_reference(patient: dict, reference: date) -> date:
    return _parse(patient.get("deceasedDateTime")) or reference


def _over_89_birth_date(patient: dict, reference: date) -> tuple[str, ...]:
    birth = _parse(patient.get("birthDate"))
    if birth is None or age_on(birth, _age_reference(patient, reference)) <= AGE_CAP_YEARS:
        return ()
    return (birth.isoformat(),)


def _cap_birth_date(original: dict, out: dict, w: Walk, reference: date) -> None:
    """Over 89 at the reference date (or at death): birthDate becomes a year that makes the patient 90 there."""
    birth, reference = _parse(original["birthDate"]), _age_reference(original, reference)
    if birth is not None and age_on(birth, reference) > AGE_CAP_YEARS:
        shifted = reference + timedelta(days=w.offset)
        out["birthDate"] = f"{shifted.year - AGE_CAP_YEARS - 1:04d}"
        w.count("C", "Patient.birthDate", "age_cap")
