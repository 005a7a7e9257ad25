"""EHR ingest: a landed FHIR R4 bulk export -> checked, de-identified rows of the staged tables
(patients, encounters, labs, conditions, notes, events, deletions).

Order matters: parse and check first (tasks/ingest/fhir_parse.py; rejected lines never reach de-identification), then
de-identify every surviving resource with the extract's own people as the scrubber's known identifiers, then flatten
through the allow-list (tasks/ingest/fhir_flatten.py). Lab values are converted to their code's canonical UCUM unit
(the catalogue's, else the workspace's first: tasks/ingest/lab_units.py) before anything downstream sees them.

Patients of earlier exports: an incremental export does not repeat unchanged Patients, so the workspace remembers,
per site, a keyed hash of each published FHIR Patient id -> its pseudonym (IngestState.patient_links, in .mmfm/,
never in the versioned data; no MRN is stored). A reference to such a patient yields the pseudonym and date offset of
its first ingest.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tasks.deid import DeidError, Pseudonymizer, deidentify_resource, known_identifiers, patient_index
from tasks.deid.fhir import human_names
from tasks.deid.fhir_elements import type_label
from tasks.deid.text import KnownIdentifiers
from tasks.ingest.accounting import BatchResult
from tasks.ingest.fhir_events import patient_element
from tasks.ingest.fhir_flatten import TABLE_OF, flatten
from tasks.ingest.fhir_parse import CURATED_TYPES, Item, ParsedExport, parse_export
from tasks.ingest.lab_units import LabUnits
from tasks.ingest.landing import Extract
from tasks.ingest.quarantine import Rejection
from tasks.ingest.state import IngestState

NO_MRN = ("deid.fhir_no_mrn", "the Patient has no identifier typed MR (HL7 v2-0203) and none in the MRN system "
          "configured (`--mrn-system` / params.yaml ingest.fhir.mrn_system): its resources cannot be linked")
SHARED_MRN = ("deid.fhir_shared_mrn", "another Patient of the extract carries the same MRN: the same person twice or "
              "two people under one number, which cannot be told apart; both are quarantined, with their resources")
# What a hostile resource can still raise in de-identification or flattening; the type is reported, never the text
UNEXPECTED = (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError, OverflowError)


class EarlierPatients:
    """FHIR Patient ids published from this site by earlier ingests -> pseudonym, looked up by keyed hash."""

    def __init__(self, keys: Pseudonymizer, site: str, links: dict[str, str] | None = None) -> None:
        self.keys, self.site, self.links = keys, site, links or {}

    def key(self, fhir_id: str) -> str:
        return self.keys.digest("fhir-patient-link", self.site.strip(), fhir_id).hex()

    def get(self, fhir_id: str) -> str | None:
        return self.links.get(self.key(fhir_id)) if self.links else None

    def __contains__(self, fhir_id: object) -> bool:
        return isinstance(fhir_id, str) and self.get(fhir_id) is not None


def workspace_state(landing: Path) -> Path | None:
    """The state folder (.mmfm/) of the workspace whose data/landing `landing` is, if it exists."""
    landing = Path(landing)
    state = landing.parent.parent / ".mmfm"
    return state if landing.name == "landing" and landing.parent.name == "data" and state.is_dir() else None


def _people(parsed: ParsedExport) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(staff, organisations, everyone else) the extract names, for the scrubber; built once per extract.

    Staff: display names of clinicians anywhere, and Practitioner resources' names. Everyone else: every Patient's
    names and their contacts' (relatives), RelatedPerson and Person resources' names. Each is one sorted tuple that
    every patient's KnownIdentifiers shares (it can hold thousands of names; the scrubber folds a shared one once)."""
    staff, orgs = set(parsed.staff_names), set()
    for items in parsed.items.values():
        for it in items:
            res = it.resource
            people = [p.get("individual") for p in res.get("participant") or [] if isinstance(p, dict)]
            for key in ("author", "resultsInterpreter", "performer"):
                people += res.get(key) if isinstance(res.get(key), list) else []
            staff.update(p["display"] for p in people if isinstance(p, dict) and isinstance(p.get("display"), str))
            for key in ("serviceProvider", "managingOrganization", "custodian"):
                if isinstance(res.get(key), dict) and isinstance(res[key].get("display"), str):
                    orgs.add(res[key]["display"])
    others = set(parsed.related_names)
    for it in parsed.items.get("Patient", []):
        contacts = [c.get("name") for c in it.resource.get("contact") or [] if isinstance(c, dict)]
        others.update(human_names([*(it.resource.get("name") or []), *contacts]))
    return tuple(_clean(staff)), tuple(_clean(orgs)), tuple(_clean(others))


def _clean(names: set[str]) -> list[str]:
    return sorted({n.strip() for n in names if n.strip()})


def _subject(it: Item) -> str | None:
    res = it.resource
    if res["resourceType"] == "Patient":
        return res["id"]
    ref = (res.get(patient_element(res["resourceType"])) or {}).get("reference", "")
    return ref.split("/", 1)[1] if isinstance(ref, str) and "/" in ref else None


def _rejection(it: Item, rule: str, message: str) -> Rejection:
    return Rejection(source_uri=it.uri, sha256=it.sha256, location=it.location, source="fhir", stage="deidentify",
                     rule=rule, message=message)


def ingest_fhir(extract: Extract, landing, keys: Pseudonymizer, site: str, validate_structure: bool = True,
                mrn_system: str | None = None, state_dir: Path | None = None) -> BatchResult:
    """Parse, check, de-identify and flatten one landed FHIR extract of `site`. The MRN is the identifier typed MR,
    or the one in `mrn_system` (sites often mark it by system only).

    `state_dir` is the workspace's .mmfm/ (default: the one beside `landing` when it is a workspace's data/landing):
    patients published from the site earlier resolve through it, and this extract's patients are staged there for
    the publish that commits the extract (IngestState.mark_processed)."""
    state_dir = state_dir or workspace_state(landing)
    state = IngestState(state_dir) if state_dir is not None else None
    earlier = EarlierPatients(keys, site, state.patient_links(site) if state is not None else None)
    parsed = parse_export(extract, landing, validate_structure=validate_structure, earlier=earlier,
                          units=LabUnits(state))  # lab units: the workspace's, recorded in its state
    result = BatchResult(source="fhir", received=sum(parsed.received.values()))
    result.rejections.extend(parsed.rejections)
    result.facts = {"manifest": parsed.manifest, "operation_outcomes": dict(parsed.errors),
                    "manifest_mismatches": [uri for uri, m in parsed.manifest.items()
                                            if m["declared"] != m["received"]]}
    reference = parsed.transaction_date  # ages for the over-89 rule are computed at it, so reruns agree
    patients = [it.resource for it in parsed.items.get("Patient", [])]
    index = patient_index(patients, site, mrn_system)
    shared = _shared_mrns(index)
    index = {fhir_id: owner for fhir_id, owner in index.items() if fhir_id not in shared}
    staff, orgs, others = _people(parsed)
    known = {p["id"]: known_identifiers(p, staff, orgs, reference, other_names=others) for p in patients}
    # A patient of an earlier export has no Patient resource here, so the scrubber gets only the extract-wide names
    # for their notes: their own name, phone and MRN are not known this time (accepted: the patterns still apply).
    extract_wide = KnownIdentifiers(staff_names=staff, organizations=orgs, other_names=others)
    linked: dict[str, str] = {}  # keyed FHIR id -> pseudonym of the patients this extract ingests
    ingested: Counter = Counter()  # staged resources per type
    for rtype in CURATED_TYPES:
        for it in parsed.items.get(rtype, []):
            if rtype == "Patient" and it.resource.get("id") not in index:
                result.rejections.append(_rejection(it, *(SHARED_MRN if it.resource.get("id") in shared else NO_MRN)))
                continue
            pseudonym = _ingest_one(result, it, keys, site, index, known.get(_subject(it), extract_wide), reference,
                                    earlier, parsed.units)
            ingested[rtype] += pseudonym is not None
            if rtype == "Patient" and pseudonym is not None:
                linked[earlier.key(it.resource["id"])] = pseudonym
    result.facts["resource_types"] = _per_type(parsed.received, ingested)
    if state is not None:
        state.stage_patient_links("fhir", site, extract.extract_id, linked)
    result.add_rows("deletions", [{"resource_type": t, "site": site, "resource_id": _deleted_id(keys, site, t, rid,
                                                                                              index, earlier)}
                                  for t, rid in sorted(parsed.deleted)])
    return result


def _shared_mrns(index: dict[str, tuple[str, str]]) -> set[str]:
    """FHIR ids of the Patients whose MRN another Patient of the extract (with another id) also carries. Staged, they
    would be one pseudonym with two rows (and two people's records merged, if they are two people)."""
    holders: dict[tuple[str, str], list[str]] = {}
    for fhir_id, (owner_site, mrn) in index.items():
        holders.setdefault((owner_site, mrn.strip()), []).append(fhir_id)
    return {fhir_id for ids in holders.values() if len(ids) > 1 for fhir_id in ids}


def _ingest_one(result: BatchResult, it: Item, keys: Pseudonymizer, site: str, index: dict, known, reference,
                earlier: EarlierPatients, units: LabUnits | None = None) -> str | None:
    """De-identify and flatten one resource, or quarantine it under the rule it broke (never quoting it); the
    patient pseudonym of what was staged, None when it was quarantined. An Observation gives a row per value (its
    components'), a panel without a value none: either way it is ingested."""
    rtype = it.resource["resourceType"]
    try:
        out = deidentify_resource(it.resource, keys, site=site, patients=index, known=known, age_reference=reference,
                                  earlier=earlier.get)
        rows = flatten(rtype, out.resource, units)
    except DeidError as exc:
        result.rejections.append(_rejection(it, f"deid.{exc.rule}", str(exc)))
        return None
    except UNEXPECTED as exc:
        result.rejections.append(_rejection(it, "fhir.unprocessable", f"{rtype} could not be de-identified or "
                                            f"flattened ({type(exc).__name__}): quarantined for review"))
        return None
    result.deid.add_fhir(out)
    result.add_rows(TABLE_OF[rtype], [{**row, "patient_id": out.patient_pseudonym, "site": site,
                                       "source_sha256": it.sha256} for row in rows])
    result.ingested += 1
    return out.patient_pseudonym


def _per_type(received: Counter, ingested: Counter) -> dict[str, dict[str, int]]:
    """received / ingested / quarantined per resource type (what the export delivered of each, and its fate): a type
    kept in landing shows up with everything quarantined. Quarantined is received less ingested; the totals'
    `received == ingested + quarantined`, checked at publish, is what ties it to the quarantine records."""
    by_label: Counter = Counter()  # a type the file name or the line claims is input: quoted only if FHIR's
    for t, n in received.items():
        by_label[t if t == "export metadata" else type_label(t)] += n
    return {t: {"received": n, "ingested": ingested[t], "quarantined": n - ingested[t]}
            for t, n in sorted(by_label.items())}


def _deleted_id(keys: Pseudonymizer, site: str, rtype: str, rid: str, index: dict, earlier: EarlierPatients) -> str:
    if rtype == "Patient" and rid in index:
        return keys.patient(*index[rid])
    if rtype == "Patient" and rid in earlier:
        return earlier.get(rid) or ""
    return keys.resource_id(site, rtype, rid)
