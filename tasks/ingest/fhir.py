"""EHR ingest: a landed FHIR R4 bulk export -> checked, de-identified rows of the staged tables
(patients, encounters, labs, conditions, notes, deletions).

Order matters: parse and check first (tasks/ingest/fhir_parse.py; rejected lines never reach de-identification), then
de-identify every surviving resource with the extract's own patients and staff as the scrubber's known identifiers,
then flatten. Lab values are converted to the catalogue's canonical unit before anything downstream sees them.
"""

from __future__ import annotations

import base64
from datetime import date, datetime

from data_contracts import lab_by_loinc
from tasks.deid import DeidError, Pseudonymizer, deidentify_resource, known_identifiers, patient_index
from tasks.ingest.accounting import BatchResult
from tasks.ingest.fhir_parse import CURATED_TYPES, Item, ParsedExport, parse_export
from tasks.ingest.landing import Extract
from tasks.ingest.quarantine import Rejection

TABLE_OF = {"Patient": "patients", "Encounter": "encounters", "Observation": "labs", "Condition": "conditions",
            "DiagnosticReport": "notes", "DocumentReference": "notes"}


def _ref_id(ref: dict | None) -> str | None:
    value = (ref or {}).get("reference", "")
    return value.split("/", 1)[1] if "/" in value else None


def _first_coding(concept: dict | None, system: str | None = None) -> dict:
    codings = (concept or {}).get("coding") or []
    return next((c for c in codings if system is None or c.get("system") == system), codings[0] if codings else {})


def _text(attachments: list[dict]) -> str:
    parts = [base64.b64decode(a["data"]).decode("utf-8", "replace") for a in attachments
             if a.get("data") and str(a.get("contentType", "")).startswith("text/plain")]
    return "\n\n".join(parts)


def _patient_row(res: dict) -> dict:
    death = res.get("deceasedDateTime")
    return {"patient_id": res["id"], "sex": res.get("gender"), "birth_date": res.get("birthDate"),
            "deceased": bool(death or res.get("deceasedBoolean")), "death_date": death}


def _encounter_row(res: dict) -> dict:
    period = res.get("period") or {}
    return {"encounter_id": res["id"], "class": (res.get("class") or {}).get("code"),
            "type_code": _first_coding((res.get("type") or [{}])[0]).get("code"),
            "start": period.get("start"), "end": period.get("end")}


def _lab_row(res: dict) -> dict:
    labs = lab_by_loinc()
    loinc = _first_coding(res.get("code"), "http://loinc.org").get("code")
    lab, qty = labs[loinc], res["valueQuantity"]  # checked in fhir_extract: code, unit and range are valid
    source_unit = qty.get("code", qty.get("unit"))
    return {"observation_id": res["id"], "encounter_id": _ref_id(res.get("encounter")), "loinc": loinc,
            "lab": lab.key, "category": _first_coding((res.get("category") or [{}])[0]).get("code"),
            "value": float(lab.to_canonical(float(qty["value"]), source_unit)), "unit": lab.canonical,
            "source_unit": source_unit, "time": res.get("effectiveDateTime")}


def _condition_row(res: dict) -> dict:
    coding = _first_coding(res.get("code"))
    return {"condition_id": res["id"], "encounter_id": _ref_id(res.get("encounter")), "system": coding.get("system"),
            "code": coding.get("code"), "display": coding.get("display"),
            "category": _first_coding((res.get("category") or [{}])[0]).get("code"),
            "recorded": res.get("recordedDate")}


def _report_row(res: dict) -> dict:
    return {"note_id": res["id"], "encounter_id": _ref_id(res.get("encounter")), "kind": "radiology_report",
            "loinc": _first_coding(res.get("code"), "http://loinc.org").get("code"),
            "time": res.get("effectiveDateTime"), "text": _text(res.get("presentedForm") or [])}


def _document_row(res: dict) -> dict:
    encounters = (res.get("context") or {}).get("encounter") or [{}]
    return {"note_id": res["id"], "encounter_id": _ref_id(encounters[0]), "kind": "clinical_note",
            "loinc": _first_coding(res.get("type"), "http://loinc.org").get("code"), "time": res.get("date"),
            "text": _text([c.get("attachment") or {} for c in res.get("content") or []])}


FLATTEN = {"Patient": _patient_row, "Encounter": _encounter_row, "Observation": _lab_row,
           "Condition": _condition_row, "DiagnosticReport": _report_row, "DocumentReference": _document_row}


def _extract_date(parsed: ParsedExport) -> date | None:
    """The export's transactionTime: ages for the over-89 rule are computed at it, so reruns agree."""
    when = parsed.transaction_time
    return datetime.fromisoformat(when.replace("Z", "+00:00")).date() if when else None


def _staff_and_organisations(parsed: ParsedExport) -> tuple[list[str], list[str]]:
    """Display names of clinicians and organisations anywhere in the extract: notes quote them in free text."""
    staff, orgs = set(), set()
    for items in parsed.items.values():
        for it in items:
            res = it.resource
            people = [p.get("individual") for p in res.get("participant") or []]
            for key in ("author", "resultsInterpreter", "performer"):
                people += res.get(key) or []
            staff.update(p["display"] for p in people if isinstance(p, dict) and p.get("display"))
            for key in ("serviceProvider", "managingOrganization", "custodian"):
                if isinstance(res.get(key), dict) and res[key].get("display"):
                    orgs.add(res[key]["display"])
    return sorted(staff), sorted(orgs)


def _subject(it: Item) -> str | None:
    res = it.resource
    return res["id"] if res["resourceType"] == "Patient" else _ref_id(res.get("subject"))


NO_MRN = ("deid.fhir_no_mrn", "the Patient has no identifier typed MR (HL7 v2-0203) and none in the MRN system "
          "configured (`--mrn-system` / params.yaml ingest.fhir.mrn_system): its resources cannot be linked")


def ingest_fhir(extract: Extract, landing, keys: Pseudonymizer, site: str, validate_structure: bool = True,
                mrn_system: str | None = None) -> BatchResult:
    """Parse, check, de-identify and flatten one landed FHIR extract of `site`. The MRN is the identifier typed MR,
    or the one in `mrn_system` (sites often mark it by system only)."""
    parsed = parse_export(extract, landing, validate_structure=validate_structure)
    result = BatchResult(source="fhir", received=sum(parsed.received.values()))
    result.rejections.extend(parsed.rejections)
    result.facts = {"manifest": parsed.manifest, "operation_outcomes": dict(parsed.errors),
                    "manifest_mismatches": [name for name, m in parsed.manifest.items()
                                            if m["declared"] != m["received"]]}
    reference = _extract_date(parsed)
    patients = [it.resource for it in parsed.items.get("Patient", [])]
    index = patient_index(patients, site, mrn_system)
    staff, orgs = _staff_and_organisations(parsed)
    known = {p["id"]: known_identifiers(p, staff, orgs, reference) for p in patients}
    for rtype in CURATED_TYPES:
        for it in parsed.items.get(rtype, []):
            if rtype == "Patient" and it.resource.get("id") not in index:
                result.rejections.append(Rejection(source_uri=it.uri, sha256=it.sha256, location=it.location,
                                                   source="fhir", stage="deidentify", rule=NO_MRN[0],
                                                   message=NO_MRN[1]))
                continue
            try:
                out = deidentify_resource(it.resource, keys, site=site, patients=index, known=known.get(_subject(it)),
                                          age_reference=reference)
            except DeidError as exc:
                result.rejections.append(Rejection(
                    source_uri=it.uri, sha256=it.sha256, location=it.location, source="fhir",
                    stage="deidentify", rule=f"deid.{exc.rule}", message=str(exc)))
                continue
            result.deid.add_fhir(out)
            row = FLATTEN[rtype](out.resource)
            result.add_rows(TABLE_OF[rtype], [{**row, "patient_id": out.patient_pseudonym, "site": site,
                                               "source_sha256": it.sha256}])
            result.ingested += 1
    result.add_rows("deletions", [{"resource_type": t, "site": site,
                                   "resource_id": keys.patient(*index[rid]) if t == "Patient" and rid in index
                                   else keys.resource_id(site, t, rid)} for t, rid in sorted(parsed.deleted)])
    return result
